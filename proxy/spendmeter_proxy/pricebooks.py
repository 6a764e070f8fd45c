"""PriceBooks: the schema shared by the ``PriceBook`` CRD spec and ``--prices`` files, and its validation.

A PriceBook says what models cost (per million tokens, optionally per call and above input-size tiers),
which discounts apply and which deployment or profile names stand for which models (see DESIGN.md
"PriceBook"). This module turns the plain data of one book (a parsed YAML/JSON mapping) into frozen
objects, or raises ValueError naming the book's source and the offending path, e.g.
``file:/etc/spendmeter/prices.yaml: spec.models[2].perMillionTokens.input: must not be negative (got -1)``.

Accepted shapes: the full object (``apiVersion``/``kind``/``metadata``/``spec``), a bare spec (the mapping
under ``spec``), and, through `parse_pricebook_documents`, a YAML stream of several such documents.
Unknown fields are errors, so a typo never silently leaves a price out.

Pure: no I/O. Pricing itself (lookup and cost) lives in `spendmeter_proxy.pricing`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import yaml

API_VERSION = "spendmeter.io/v1alpha1"
KIND = "PriceBook"

RATE_FIELDS: dict[str, str] = {
    "input": "input",
    "output": "output",
    "cachedInput": "cached_input",
    "cacheWrite": "cache_write",
    "cacheWrite1h": "cache_write_1h",
}

_OBJECT_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_SPEC_FIELDS = frozenset({"models", "discounts", "aliases"})
_MODEL_FIELDS = frozenset({"provider", "model", "match", "perMillionTokens", "perCall", "tiers"})
_TIER_FIELDS = frozenset({"aboveInputTokens", "perMillionTokens"})
_DISCOUNT_FIELDS = frozenset({"provider", "model", "percent"})
_ALIAS_FIELDS = frozenset({"provider", "from", "to"})
_HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens for each part of a call; None where the book gives no price for that part."""

    input: Decimal | None = None
    output: Decimal | None = None
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Tier:
    """Rates for a whole call whose input exceeds ``above_input_tokens``."""

    above_input_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One ``models[]`` entry: an exact model name or a regex on it, and its prices."""

    provider: str | None
    model: str | None
    match: re.Pattern[str] | None
    rates: Rates
    tiers: tuple[Tier, ...] = ()
    per_call: Decimal | None = None

    @property
    def key(self) -> str:
        """The name that identifies this entry: the model name, or the regex as written."""
        if self.model is not None:
            return self.model
        assert self.match is not None
        return self.match.pattern


@dataclass(frozen=True, slots=True)
class Discount:
    """A percentage off every price in its scope (a provider, a model, both, or everything)."""

    provider: str | None
    model: str | None
    percent: Decimal


@dataclass(frozen=True, slots=True)
class Alias:
    """A name that is not a model name (a deployment, an inference profile) and the model it stands for."""

    provider: str | None
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class PriceBook:
    """One validated book. ``source`` names where it came from (``file:<path>``, ``pricebook:<name>``...)."""

    source: str
    name: str | None = None
    models: tuple[ModelPrice, ...] = ()
    discounts: tuple[Discount, ...] = ()
    aliases: tuple[Alias, ...] = ()


class _Reader:
    """Carries the source name so every error says where it comes from."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> ValueError:
        return ValueError(f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}")

    def mapping(self, value: object, path: str, allowed: frozenset[str]) -> Mapping[str, object]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a mapping (got {type(value).__name__})")
        if value.keys() <= allowed:
            return value
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise self.fail(path, f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
        return value

    def sequence(self, value: object, path: str) -> list[object]:
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise self.fail(path, f"must be a list (got {type(value).__name__})")
        return list(value)

    def text(self, value: object, path: str, *, required: bool = False) -> str | None:
        if value is None:
            if required:
                raise self.fail(path, "is required")
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"must be a non-empty string (got {value!r})")
        return value

    def number(self, value: object, path: str) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise self.fail(path, f"must be a number (got {value!r})")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(path, f"must be a finite number (got {value!r})")
        try:
            number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        except InvalidOperation:
            raise self.fail(path, f"must be a number (got {value!r})") from None
        if not number.is_finite():
            raise self.fail(path, f"must be a finite number (got {value!r})")
        if number < 0:
            raise self.fail(path, f"must not be negative (got {value!r})")
        return number

    def rates(self, value: object, path: str, *, base: bool) -> Rates:
        raw = self.mapping(value, path, frozenset(RATE_FIELDS))
        parts = {
            attr: self.number(raw[name], f"{path}.{name}") if raw.get(name) is not None else None
            for name, attr in RATE_FIELDS.items()
        }
        if base:
            for name in ("input", "output"):
                if parts[RATE_FIELDS[name]] is None:
                    raise self.fail(f"{path}.{name}", "is required")
        elif all(v is None for v in parts.values()):
            raise self.fail(path, "must give at least one price")
        return Rates(**parts)

    def model(self, value: object, path: str) -> ModelPrice:
        raw = self.mapping(value, path, _MODEL_FIELDS)
        provider = self.text(raw.get("provider"), f"{path}.provider")
        name = self.text(raw.get("model"), f"{path}.model")
        pattern = self.text(raw.get("match"), f"{path}.match")
        if (name is None) == (pattern is None):
            raise self.fail(path, "needs exactly one of 'model' (an exact name) or 'match' (a regex)")
        compiled = None
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise self.fail(f"{path}.match", f"is not a valid regex: {exc}") from None
        per_call = self.number(raw["perCall"], f"{path}.perCall") if raw.get("perCall") is not None else None
        if raw.get("perMillionTokens") is None:
            if per_call is None:
                raise self.fail(path, "needs 'perMillionTokens' or 'perCall'")
            rates = Rates(input=Decimal(0), output=Decimal(0))
        else:
            rates = self.rates(raw["perMillionTokens"], f"{path}.perMillionTokens", base=True)
        tiers = tuple(
            self.tier(item, f"{path}.tiers[{i}]")
            for i, item in enumerate(self.sequence(raw.get("tiers"), f"{path}.tiers"))
        )
        if tiers:
            thresholds = [t.above_input_tokens for t in tiers]
            if len(set(thresholds)) != len(thresholds):
                raise self.fail(f"{path}.tiers", "two tiers have the same aboveInputTokens")
            tiers = tuple(sorted(tiers, key=lambda t: t.above_input_tokens))
        return ModelPrice(provider, name, compiled, rates, tiers, per_call)

    def tier(self, value: object, path: str) -> Tier:
        raw = self.mapping(value, path, _TIER_FIELDS)
        above = raw.get("aboveInputTokens")
        if isinstance(above, bool) or not isinstance(above, int) or above < 0:
            raise self.fail(f"{path}.aboveInputTokens", f"must be a whole number >= 0 (got {above!r})")
        if raw.get("perMillionTokens") is None:
            raise self.fail(f"{path}.perMillionTokens", "is required")
        return Tier(above, self.rates(raw["perMillionTokens"], f"{path}.perMillionTokens", base=False))

    def discount(self, value: object, path: str) -> Discount:
        raw = self.mapping(value, path, _DISCOUNT_FIELDS)
        if raw.get("percent") is None:
            raise self.fail(f"{path}.percent", "is required")
        percent = self.number(raw["percent"], f"{path}.percent")
        if percent > _HUNDRED:
            raise self.fail(f"{path}.percent", f"must be between 0 and 100 (got {raw['percent']!r})")
        return Discount(
            self.text(raw.get("provider"), f"{path}.provider"),
            self.text(raw.get("model"), f"{path}.model"),
            percent,
        )

    def alias(self, value: object, path: str) -> Alias:
        raw = self.mapping(value, path, _ALIAS_FIELDS)
        source = self.text(raw.get("from"), f"{path}.from", required=True)
        target = self.text(raw.get("to"), f"{path}.to", required=True)
        assert source is not None and target is not None
        return Alias(self.text(raw.get("provider"), f"{path}.provider"), source, target)


def parse_pricebook(obj: Mapping[str, object], source: str) -> PriceBook:
    """Validate one PriceBook (full object or bare spec) read from ``source``; raise ValueError if invalid."""
    reader = _Reader(source)
    name: str | None = None
    prefix = ""
    spec: object = obj
    if not isinstance(obj, Mapping):
        raise reader.fail("", f"a PriceBook must be a mapping (got {type(obj).__name__})")
    if {"apiVersion", "kind", "metadata", "spec"} & obj.keys():
        top = reader.mapping(obj, "", _OBJECT_FIELDS)
        if top.get("apiVersion", API_VERSION) != API_VERSION:
            raise reader.fail("apiVersion", f"must be {API_VERSION!r} (got {top['apiVersion']!r})")
        if top.get("kind", KIND) != KIND:
            raise reader.fail("kind", f"must be {KIND!r} (got {top['kind']!r})")
        metadata = top.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise reader.fail("metadata", "must be a mapping")
        name = reader.text(metadata.get("name"), "metadata.name")
        spec = top.get("spec") or {}
        prefix = "spec."
    raw = reader.mapping(spec, prefix.rstrip("."), _SPEC_FIELDS)
    models = tuple(
        reader.model(item, f"{prefix}models[{i}]")
        for i, item in enumerate(reader.sequence(raw.get("models"), f"{prefix}models"))
    )
    discounts = tuple(
        reader.discount(item, f"{prefix}discounts[{i}]")
        for i, item in enumerate(reader.sequence(raw.get("discounts"), f"{prefix}discounts"))
    )
    aliases = tuple(
        reader.alias(item, f"{prefix}aliases[{i}]")
        for i, item in enumerate(reader.sequence(raw.get("aliases"), f"{prefix}aliases"))
    )
    loop = find_alias_loop(aliases)
    if loop is not None:
        raise reader.fail(f"{prefix}aliases", f"alias loop: {' -> '.join(loop)}")
    return PriceBook(source=source, name=name, models=models, discounts=discounts, aliases=aliases)


def parse_pricebook_documents(text: str, source: str) -> list[PriceBook]:
    """Parse a YAML (or JSON) stream of one or more PriceBooks; empty documents are skipped."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    if len(documents) == 1:
        return [parse_pricebook(_as_mapping(documents[0], source), source)]
    return [
        parse_pricebook(_as_mapping(doc, f"{source}#{i}"), f"{source}#{i}") for i, doc in enumerate(documents)
    ]


def _as_mapping(doc: object, source: str) -> Mapping[str, object]:
    if not isinstance(doc, Mapping):
        raise ValueError(f"{source}: a PriceBook must be a mapping (got {type(doc).__name__})")
    return doc


def resolve_alias(aliases: Mapping[tuple[str | None, str], str], provider: str, model: str) -> list[str]:
    """Follow aliases from ``model`` as seen under ``provider``: the chain of names, starting with ``model``.

    A provider-scoped alias wins over one for any provider. Stops (without repeating a name) on a loop;
    `find_alias_loop` reports loops when books are parsed or merged.
    """
    chain = [model]
    while True:
        target = aliases.get((provider, chain[-1]))
        if target is None:
            target = aliases.get((None, chain[-1]))
        if target is None:
            return chain
        if target in chain:
            chain.append(target)
            return chain
        chain.append(target)


def alias_map(aliases: Iterable[Alias]) -> dict[tuple[str | None, str], str]:
    """Aliases keyed by (provider or None, from); later ones override earlier ones of the same key."""
    return {(a.provider, a.source): a.target for a in aliases}


def find_alias_loop(aliases: Iterable[Alias]) -> list[str] | None:
    """The first alias chain that comes back to a name it passed, or None."""
    table = alias_map(aliases)
    scopes: list[str | None] = [*sorted({p for p, _ in table if p is not None}), None]
    for provider in scopes:
        scope = provider if provider is not None else "\0any"
        for p, name in table:
            if p not in (provider, None):
                continue
            chain = resolve_alias(table, scope, name)
            if len(chain) > 1 and chain[-1] in chain[:-1]:
                return chain
    return None
