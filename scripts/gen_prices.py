"""Generate spendmeter's built-in price table from LiteLLM's published price files.

The built-in table (``proxy/spendmeter_proxy/data/prices.json``) is generated, never edited by hand.
To refresh it, put a newer copy of LiteLLM's ``model_prices_and_context_window.json`` (named
``litellm-<version>.json``) beside the others and run, from the repository root::

    .venv/bin/python scripts/gen_prices.py --new ../shared/prices/litellm-<version>.json

then commit the rewritten JSON. ``tests/proxy/test_gen_prices.py`` checks that the committed file is
exactly what this script makes from the files in ``../shared/prices``.

What it keeps: chat, completion, embedding and responses models of the providers in `PROVIDERS`, keyed
by spendmeter's provider id and by the model name the provider answers with (LiteLLM's routing prefixes
such as ``gemini/`` or ``xai/`` are removed, and when two keys give the same name the shorter key wins;
region-pinned keys such as ``azure/eu/...`` and ``bedrock/us-east-1/...`` are left out). Prices become
USD per million tokens in the PriceBook schema (``input``, ``output``, ``cachedInput``, ``cacheWrite``,
``cacheWrite1h``, ``tiers`` from the ``*_above_<N>k_tokens`` keys, ``perCall`` from
``input_cost_per_request``). The newer file wins; the older one only fills in models the newer one
dropped, in a book of its own so every price names the LiteLLM version it came from.
Output is sorted and byte-for-byte deterministic.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from decimal import Decimal, localcontext
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NEW = REPO.parent / "shared" / "prices" / "litellm-1.110.2.json"
DEFAULT_OLD = REPO.parent / "shared" / "prices" / "litellm-1.75.0.json"
DEFAULT_OUT = REPO / "proxy" / "spendmeter_proxy" / "data" / "prices.json"

# LiteLLM's litellm_provider -> spendmeter provider id (OpenTelemetry gen_ai.provider.name style).
PROVIDERS: dict[str, str] = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "azure": "azure.ai.openai",
    "azure_text": "azure.ai.openai",
    "azure_ai": "azure.ai.openai",  # Azure AI Foundry: the same hosts, so the same provider id
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "codestral": "mistral_ai",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "groq": "groq",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "openrouter": "openrouter",
    "cerebras": "cerebras",
    "perplexity": "perplexity",
    "together_ai": "together_ai",
    "fireworks_ai": "fireworks_ai",
    "deepinfra": "deepinfra",
}
VERTEX_FAMILY = "vertex_ai-"  # vertex_ai-language-models, vertex_ai-anthropic_models, ...
# Routing prefixes LiteLLM puts in front of the provider's own model name.
PREFIXES = (
    "azure_ai/",
    "azure/",
    "bedrock/",
    "gemini/",
    "vertex_ai/",
    "mistral/",
    "cohere/",
    "groq/",
    "deepseek/",
    "xai/",
    "openrouter/",
    "cerebras/",
    "perplexity/",
    "codestral/",
    "together_ai/",
    "fireworks_ai/",
    "deepinfra/",
)
MODES = frozenset({"chat", "completion", "embedding", "responses"})
# Keys pinned to a region or data zone: the provider answers with the plain model name, so leave them out.
REGION_PINNED = re.compile(r"^(?:eu|us|global|[a-z]{2}(?:-[a-z]+)+-\d+)/")
RATES = (
    ("input", "input_cost_per_token"),
    ("output", "output_cost_per_token"),
    ("cachedInput", "cache_read_input_token_cost"),
    ("cacheWrite", "cache_creation_input_token_cost"),
    ("cacheWrite1h", "cache_creation_input_token_cost_above_1hr"),
)
TIER_KEY = re.compile(r"^(?P<part>.+)_above_(?P<k>\d+)k_tokens$")
SIGNIFICANT_DIGITS = 10


def per_million(value: object) -> Decimal | None:
    """LiteLLM's USD-per-token float as USD per million tokens, without float noise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    with localcontext() as ctx:
        ctx.prec = SIGNIFICANT_DIGITS
        return (+Decimal(repr(value)).scaleb(6)).normalize()


def provider_id(litellm_provider: object) -> str | None:
    if not isinstance(litellm_provider, str):
        return None
    if litellm_provider.startswith(VERTEX_FAMILY):
        return "gcp.vertex_ai"
    return PROVIDERS.get(litellm_provider)


def model_name(key: str) -> str | None:
    """The name the provider answers with, or None for keys that are not one model's price."""
    for prefix in PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    if not key or REGION_PINNED.match(key):
        return None
    return key


def rates_of(info: Mapping[str, object], suffix: str = "") -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for field, litellm_key in RATES:
        value = per_million(info.get(litellm_key + suffix))
        if value is not None:
            out[field] = value
    return out


def entry_of(info: Mapping[str, object]) -> dict[str, object] | None:
    """One model's prices in the PriceBook schema, or None when it has no usable token price."""
    rates = rates_of(info)
    if "input" not in rates:
        return None
    if "output" not in rates:
        if info.get("mode") != "embedding":
            return None
        rates["output"] = Decimal(0)
    entry: dict[str, object] = {"perMillionTokens": rates}
    thresholds = sorted(
        {
            int(found["k"])
            for key in info
            if (found := TIER_KEY.match(key)) and found["part"] in dict(RATES).values()
        }
    )
    tiers = []
    for k in thresholds:
        tier_rates = rates_of(info, f"_above_{k}k_tokens")
        if tier_rates:
            tiers.append({"aboveInputTokens": k * 1000, "perMillionTokens": tier_rates})
    if tiers:
        entry["tiers"] = tiers
    per_call = per_million(info.get("input_cost_per_request"))
    if per_call:
        entry["perCall"] = per_call.scaleb(-6).normalize()
    return entry


def convert(prices: Mapping[str, object]) -> dict[str, dict[str, dict[str, object]]]:
    """LiteLLM's table as {provider id: {model name: entry}}; on a name clash the shortest key wins."""
    chosen: dict[tuple[str, str], tuple[str, dict[str, object]]] = {}
    for key in sorted(prices, key=lambda k: (len(k), k)):
        info = prices[key]
        if not isinstance(info, Mapping) or info.get("mode") not in MODES:
            continue
        provider = provider_id(info.get("litellm_provider"))
        name = model_name(key)
        if provider is None or name is None or (provider, name) in chosen:
            continue
        entry = entry_of(info)
        if entry is not None:
            chosen[(provider, name)] = (key, entry)
    table: dict[str, dict[str, dict[str, object]]] = {}
    for (provider, name), (_, entry) in sorted(chosen.items()):
        table.setdefault(provider, {})[name] = entry
    return table


def version_of(path: Path) -> str:
    found = re.fullmatch(r"litellm-(.+)\.json", path.name)
    if found is None:
        raise ValueError(f"{path}: expected a file named litellm-<version>.json")
    return found.group(1)


def _number(value: Decimal) -> str:
    return format(value, "f")


def _dump(value: object) -> str:
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value)


def render(books: list[tuple[str, dict[str, dict[str, dict[str, object]]]]]) -> str:
    """The table as JSON text: one model per line, sorted, so diffs between refreshes stay readable."""
    lines = ["{", '"generator": "scripts/gen_prices.py",', '"books": [']
    for b, (source, table) in enumerate(books):
        lines.append("{" + f'"source": {json.dumps(source)}, "models": ' + "{")
        providers = sorted(table)
        for p, provider in enumerate(providers):
            lines.append(f"{json.dumps(provider)}: " + "{")
            models = sorted(table[provider])
            for m, model in enumerate(models):
                comma = "," if m < len(models) - 1 else ""
                lines.append(f"{json.dumps(model)}: {_dump(table[provider][model])}{comma}")
            lines.append("}" + ("," if p < len(providers) - 1 else ""))
        lines.append("}}" + ("," if b < len(books) - 1 else ""))
    lines += ["]", "}"]
    return "\n".join(lines) + "\n"


def generate(new: Path, old: Path) -> str:
    new_table = convert(json.loads(new.read_text()))
    old_table = convert(json.loads(old.read_text()))
    fill_in = {
        provider: {name: e for name, e in models.items() if name not in new_table.get(provider, {})}
        for provider, models in old_table.items()
    }
    fill_in = {provider: models for provider, models in fill_in.items() if models}
    return render(
        [(f"builtin:litellm-{version_of(old)}", fill_in), (f"builtin:litellm-{version_of(new)}", new_table)]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=Path, default=DEFAULT_NEW, help="newer LiteLLM price file (wins)")
    parser.add_argument("--old", type=Path, default=DEFAULT_OLD, help="older file, fills in dropped models")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the table")
    args = parser.parse_args(argv)
    for path in (args.new, args.old):
        if not path.is_file():
            print(f"gen_prices: {path} not found", file=sys.stderr)
            return 2
    text = generate(args.new, args.old)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"gen_prices: wrote {args.out} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
