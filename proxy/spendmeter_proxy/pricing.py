"""What one LLM call cost: price lookup over merged PriceBooks, and the cost arithmetic.

All money is `decimal.Decimal`, so a cost prints as an exact decimal (``0.0000222``), never as a
binary-float approximation. Pure: books come in validated (`spendmeter_proxy.pricebooks`); loading
them from files is `spendmeter_proxy.pricewatching`'s job.

Lookup (`PriceTable.price`), in this order:

1. Aliases. The model name is followed through the aliases of every book (a provider-scoped alias wins
   over an unscoped one; for the same key a later book's alias replaces an earlier one's).
2. Candidate names, tried one after the other; for each, books are searched from the last to the first
   (the built-in table is the first book, so any later book overrides it), and within a book an exact
   ``model`` entry wins over a ``match`` regex (searched with `re.search`: anchor it yourself), which wins
   over the normalized form of the name (below). An entry with a provider prices only that provider's
   calls; one without prices every provider's. The candidates are:

   - the (alias-resolved) name as the provider answered it;
   - the same name without a dated-snapshot suffix, only when the suffix is a calendar date:
     ``-YYYY-MM-DD`` (``gpt-4o-2024-08-06`` -> ``gpt-4o``), ``-YYYYMMDD`` (``claude-sonnet-4-5-20250929`` ->
     ``claude-sonnet-4-5``) or ``@YYYYMMDD``. A known snapshot is therefore priced as itself, never as its
     base; ``grok-4-0709`` or ``gemini-2.5-pro-preview-06-05`` are not dates and are never shortened;
   - for OpenRouter's ``vendor/model`` names, the model under the vendor's own provider
     (``x-ai/grok-4`` -> ``x_ai`` / ``grok-4``), then without its date suffix. OpenRouter passes the
     vendor's price through; its ``:free`` (and other ``:variant``) names are not normalized.

   The normalized form of a name (compared with the normalized form of each exact entry) strips what
   Bedrock adds around a model id: an ARN (``arn:aws:bedrock:<region>:<account>:inference-profile/<id>``
   or ``...:foundation-model/<id>``), a cross-region inference-profile prefix (``us.``, ``eu.``, ``apac.``,
   ``global.``, ``jp.``, ``au.``, ``ca.``, ``us-gov.``), the vendor prefix (``anthropic.``) and the version
   suffix (``-v1:0``); and it writes Vertex's ``@`` date separator as ``-``. So
   ``us.anthropic.claude-sonnet-4-20250514-v1:0`` finds ``anthropic.claude-sonnet-4-20250514-v1:0`` and an
   alias to ``claude-sonnet-4-20250514`` under ``aws.bedrock`` finds the Bedrock entry too.
3. No entry: None (unpriced), never $0.

Cost (`compute_cost`): uncached input (input - cached - cache writes) at ``input``; cached input at
``cachedInput`` (else ``input``); cache writes at ``cacheWrite`` (else ``input``), the part written with a
1-hour TTL at ``cacheWrite1h`` (else ``cacheWrite``, else ``input``); all output, reasoning included, at
``output``; plus ``perCall``. When the input exceeds a tier's ``aboveInputTokens`` the whole call is priced
at the highest such tier's rates; a part the tier does not price falls back to the tier's own fallbacks
(ending at the tier's ``input``), then to the base rates. Discounts apply last.

Discounts: each is scoped to (provider or any, model or any). For the same scope a later book's discount
replaces an earlier one's; discounts of different scopes never stack: the most specific scope that
matches the call wins (provider and model, then model, then provider, then everything). A discount's
``model`` is compared with the answering name, its alias-resolved name and the matched entry's key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from spendmeter_proxy.pricebooks import (
    Discount,
    ModelPrice,
    PriceBook,
    Rates,
    alias_map,
    find_alias_loop,
    resolve_alias,
)
from spendmeter_proxy.usage import Usage

_MILLION = Decimal(1_000_000)
_HUNDRED = Decimal(100)

_DATE_SUFFIX = re.compile(
    r"^(?P<base>.+?)(?:-(?P<y1>20\d\d)-(?P<m1>\d\d)-(?P<d1>\d\d)|[-@](?P<y2>20\d\d)(?P<m2>\d\d)(?P<d2>\d\d))$"
)
_BEDROCK_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:[^:]*:[^:]*:(?:inference-profile|foundation-model)/(.+)$")
_BEDROCK_REGION = re.compile(r"^(?:us|eu|apac|global|jp|au|ca|us-gov)\.(?=[a-z0-9-]+\.)")
_BEDROCK_VENDOR_VERSION = re.compile(r"^[a-z][a-z0-9]*\.(?P<name>[a-z].*?)(?:-v\d+(?::\d+)?|-\d+:\d+)?$")

OPENROUTER = "openrouter"
OPENROUTER_VENDORS: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gemini",
    "x-ai": "x_ai",
    "mistralai": "mistral_ai",
    "deepseek": "deepseek",
    "cohere": "cohere",
}


@dataclass(frozen=True, slots=True)
class Price:
    """The cost of one call and where the price came from."""

    cost_usd: Decimal
    source: str
    model_key: str


def format_usd(amount: Decimal) -> str:
    """An amount as a plain decimal string (``0.0000222``; never an exponent, no trailing zeros)."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def strip_date_suffix(model: str) -> str | None:
    """``model`` without a trailing calendar-date snapshot suffix, or None when it has none."""
    found = _DATE_SUFFIX.match(model)
    if found is None:
        return None
    month = int(found["m1"] or found["m2"])
    day = int(found["d1"] or found["d2"])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return found["base"]


def normalize_model_name(model: str) -> str:
    """The provider-neutral form of a model id (see the module docstring); the name itself if none applies."""
    name = model
    arn = _BEDROCK_ARN.match(name)
    if arn is not None:
        name = arn.group(1)
    name = _BEDROCK_REGION.sub("", name, count=1)
    bedrock = _BEDROCK_VENDOR_VERSION.match(name)
    if bedrock is not None:
        name = bedrock["name"]
    return name.replace("@", "-")


def _rate(*choices: Decimal | None) -> Decimal:
    for choice in choices:
        if choice is not None:
            return choice
    return Decimal(0)


def effective_rates(entry: ModelPrice, input_tokens: int) -> Rates:
    """The complete rates for a call with this many input tokens (tier chosen, every fallback applied)."""
    base = entry.rates
    b_input = _rate(base.input)
    b_write = _rate(base.cache_write, b_input)
    resolved = Rates(
        input=b_input,
        output=_rate(base.output),
        cached_input=_rate(base.cached_input, b_input),
        cache_write=b_write,
        cache_write_1h=_rate(base.cache_write_1h, b_write),
    )
    tier = next((t for t in reversed(entry.tiers) if input_tokens > t.above_input_tokens), None)
    if tier is None:
        return resolved
    t = tier.rates
    t_write = t.cache_write if t.cache_write is not None else t.input
    return Rates(
        input=_rate(t.input, resolved.input),
        output=_rate(t.output, resolved.output),
        cached_input=_rate(t.cached_input, t.input, resolved.cached_input),
        cache_write=_rate(t_write, resolved.cache_write),
        cache_write_1h=_rate(t.cache_write_1h, t_write, resolved.cache_write_1h),
    )


def compute_cost(entry: ModelPrice, usage: Usage, percent_off: Decimal = Decimal(0)) -> Decimal:
    """USD cost of ``usage`` at ``entry``'s prices, less ``percent_off`` percent."""
    rates = effective_rates(entry, usage.input_tokens)
    write_1h = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
    per_million = (
        usage.uncached_input_tokens * _rate(rates.input)
        + usage.cached_input_tokens * _rate(rates.cached_input)
        + (usage.cache_write_tokens - write_1h) * _rate(rates.cache_write)
        + write_1h * _rate(rates.cache_write_1h)
        + usage.output_tokens * _rate(rates.output)
    )
    cost = per_million / _MILLION + _rate(entry.per_call)
    if percent_off:
        cost = cost * (_HUNDRED - percent_off) / _HUNDRED
    return cost


class _Index:
    """One book's entries arranged for lookup."""

    __slots__ = ("book", "exact", "normalized", "patterns")

    def __init__(self, book: PriceBook) -> None:
        self.book = book
        self.exact: dict[tuple[str | None, str], ModelPrice] = {}
        self.normalized: dict[tuple[str | None, str], ModelPrice] = {}
        self.patterns: list[ModelPrice] = []
        for entry in book.models:
            if entry.model is None:
                self.patterns.append(entry)
                continue
            self.exact[(entry.provider, entry.model)] = entry
        # Among exact entries with the same normalized name, the shortest (then first) name serves it.
        for (provider, model), entry in sorted(self.exact.items(), key=lambda kv: (len(kv[0][1]), kv[0][1])):
            self.normalized.setdefault((provider, normalize_model_name(model)), entry)

    def find(self, provider: str, model: str, normalized: str) -> ModelPrice | None:
        entry = self.exact.get((provider, model)) or self.exact.get((None, model))
        if entry is not None:
            return entry
        for pattern_entry in self.patterns:
            if pattern_entry.provider in (None, provider):
                assert pattern_entry.match is not None
                if pattern_entry.match.search(model):
                    return pattern_entry
        return self.normalized.get((provider, normalized)) or self.normalized.get((None, normalized))


class PriceTable:
    """Books merged in order (the built-in table first, each later book overriding earlier ones).

    Raises ValueError when the books' aliases together form a loop.
    """

    def __init__(self, books: Sequence[PriceBook]) -> None:
        self.books: tuple[PriceBook, ...] = tuple(books)
        self._indexes = [_Index(book) for book in reversed(self.books)]
        all_aliases = [alias for book in self.books for alias in book.aliases]
        loop = find_alias_loop(all_aliases)
        if loop is not None:
            sources = ", ".join(b.source for b in self.books if b.aliases)
            raise ValueError(f"alias loop across price books ({sources}): {' -> '.join(loop)}")
        self._aliases = alias_map(all_aliases)
        self._discounts: dict[tuple[str | None, str | None], Discount] = {
            (d.provider, d.model): d for book in self.books for d in book.discounts
        }

    def __len__(self) -> int:
        return sum(len(book.models) for book in self.books)

    def _candidates(self, provider: str, model: str) -> Iterable[tuple[str, str]]:
        yield provider, model
        base = strip_date_suffix(model)
        if base is not None:
            yield provider, base
        if provider == OPENROUTER and "/" in model:
            vendor, _, name = model.partition("/")
            home = OPENROUTER_VENDORS.get(vendor)
            if home is not None and name:
                yield home, name
                base = strip_date_suffix(name)
                if base is not None:
                    yield home, base

    def lookup(self, provider: str, model: str) -> tuple[ModelPrice, PriceBook, list[str]] | None:
        """The entry that prices ``model`` under ``provider``, its book, and the alias chain followed."""
        chain = resolve_alias(self._aliases, provider, model)
        resolved = chain[-1]
        for cand_provider, cand_model in self._candidates(provider, resolved):
            normalized = normalize_model_name(cand_model)
            for index in self._indexes:
                entry = index.find(cand_provider, cand_model, normalized)
                if entry is not None:
                    return entry, index.book, chain
        return None

    def discount_for(self, provider: str, names: Iterable[str]) -> Decimal:
        """The percent off for a call to ``provider`` whose model goes by any of ``names``."""
        name_list = list(dict.fromkeys(names))
        for scope_provider in (provider, None):
            for name in name_list:
                found = self._discounts.get((scope_provider, name))
                if found is not None:
                    return found.percent
        for scope_provider in (provider, None):
            found = self._discounts.get((scope_provider, None))
            if found is not None:
                return found.percent
        return Decimal(0)

    def price(self, provider: str, model: str, usage: Usage, traffic_type: str | None = None) -> Price | None:
        """What ``usage`` cost on ``model`` from ``provider``; None when no book prices that model.

        ``traffic_type`` (Vertex's ``usageMetadata.trafficType``) is accepted for callers that have one;
        the PriceBook schema has no per-traffic-type prices yet, so it does not change the price.
        """
        found = self.lookup(provider, model)
        if found is None:
            return None
        entry, book, chain = found
        percent = self.discount_for(provider, [*chain, entry.key])
        return Price(cost_usd=compute_cost(entry, usage, percent), source=book.source, model_key=entry.key)
