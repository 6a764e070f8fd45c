"""The built-in price table: reproducible from LiteLLM's files, and right where prices are published."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from spendmeter_proxy.pricebooks import ModelPrice, PriceBook
from spendmeter_proxy.pricewatching import load_builtin_pricebooks
from spendmeter_proxy.pricing import PriceTable

REPO = Path(__file__).resolve().parents[2]
SHARED_PRICES = REPO.parent / "shared" / "prices"
COMMITTED = REPO / "proxy" / "spendmeter_proxy" / "data" / "prices.json"
needs_litellm_files = pytest.mark.skipif(
    not (SHARED_PRICES / "litellm-1.110.2.json").is_file()
    or not (SHARED_PRICES / "litellm-1.75.0.json").is_file(),
    reason=f"LiteLLM price files not found in {SHARED_PRICES}",
)


@pytest.fixture(scope="module")
def builtin() -> list[PriceBook]:
    return load_builtin_pricebooks()


def entry(books: list[PriceBook], provider: str, model: str) -> tuple[ModelPrice, str]:
    for book in reversed(books):
        for m in book.models:
            if (m.provider, m.model) == (provider, model):
                return m, book.source
    raise AssertionError(f"{provider}/{model} not in the built-in table")


@needs_litellm_files
def test_generator_reproduces_the_committed_table(tmp_path: Path) -> None:
    out = tmp_path / "prices.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "gen_prices.py"), "--out", str(out)], check=True)
    assert out.read_bytes() == COMMITTED.read_bytes()


def test_committed_table_loads_fast() -> None:
    load_builtin_pricebooks()  # warm imports
    started = time.perf_counter()
    PriceTable(load_builtin_pricebooks())
    assert time.perf_counter() - started < 0.5  # about 50 ms on a laptop; generous for slow CI


# The "Prices" table of provider-samples/README.md (USD per million tokens).
README_PRICES = [
    ("openai", "gpt-4o", "1.110.2", "2.50", "10.00", "1.25", None),
    ("openai", "gpt-4o-mini", "1.110.2", "0.15", "0.60", "0.075", None),
    ("openai", "gpt-4.1", "1.110.2", "2.00", "8.00", "0.50", None),
    ("openai", "o3", "1.110.2", "2.00", "8.00", "0.50", None),
    ("anthropic", "claude-3-5-sonnet-20241022", "1.75.0", "3.00", "15.00", "0.30", "3.75"),
    ("anthropic", "claude-sonnet-4-20250514", "1.75.0", "3.00", "15.00", "0.30", "3.75"),
    ("anthropic", "claude-3-5-haiku-20241022", "1.75.0", "0.80", "4.00", "0.08", "1.00"),
    ("aws.bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0", "1.110.2", "0.80", "4.00", "0.08", "1.00"),
    ("gcp.gemini", "gemini-2.5-pro", "1.110.2", "1.25", "10.00", "0.125", None),
    ("gcp.gemini", "gemini-2.5-flash", "1.110.2", "0.30", "2.50", "0.03", None),
    ("mistral_ai", "mistral-large-latest", "1.110.2", "0.50", "1.50", "0.05", None),
]


@pytest.mark.parametrize(("provider", "model", "version", "inp", "out", "cached", "write"), README_PRICES)
def test_published_prices(
    builtin: list[PriceBook],
    provider: str,
    model: str,
    version: str,
    inp: str,
    out: str,
    cached: str,
    write: str | None,
) -> None:
    found, source = entry(builtin, provider, model)
    assert source == f"builtin:litellm-{version}"
    rates = found.rates
    assert (rates.input, rates.output, rates.cached_input) == (Decimal(inp), Decimal(out), Decimal(cached))
    assert rates.cache_write == (Decimal(write) if write else None)


def test_above_200k_tiers(builtin: list[PriceBook]) -> None:
    gemini, _ = entry(builtin, "gcp.gemini", "gemini-2.5-pro")
    assert [t.above_input_tokens for t in gemini.tiers] == [200_000]
    tier = gemini.tiers[0].rates
    assert (tier.input, tier.output, tier.cached_input) == (
        Decimal("2.50"),
        Decimal("15.00"),
        Decimal("0.25"),
    )
    sonnet4, _ = entry(builtin, "aws.bedrock", "anthropic.claude-sonnet-4-20250514-v1:0")
    tier = sonnet4.tiers[0].rates
    assert (tier.input, tier.output, tier.cached_input) == (
        Decimal("6.00"),
        Decimal("22.50"),
        Decimal("0.60"),
    )


def test_one_hour_cache_writes(builtin: list[PriceBook]) -> None:
    sonnet45, _ = entry(builtin, "anthropic", "claude-sonnet-4-5")
    assert (sonnet45.rates.cache_write, sonnet45.rates.cache_write_1h) == (Decimal("3.75"), Decimal("6"))


@needs_litellm_files
def test_matches_the_summary_file(builtin: list[PriceBook]) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        gen_prices = importlib.import_module("gen_prices")
    finally:
        sys.path.remove(str(REPO / "scripts"))
    rows = json.loads((SHARED_PRICES / "summary-10-models.json").read_text())
    checked = 0
    for row in rows:
        provider = gen_prices.provider_id(row["provider"])
        model = gen_prices.model_name(row["key"])
        if provider is None or model is None:
            continue
        found, source = entry(builtin, provider, model)
        if source != f"builtin:litellm-{row['litellm_version']}":
            continue  # the newer file's row wins; the older row is only a fill-in
        for attr, column in (
            ("input", "input_per_1m"),
            ("output", "output_per_1m"),
            ("cached_input", "cached_input_per_1m"),
        ):
            expected = row[column]
            actual = getattr(found.rates, attr)
            assert (actual is None and expected is None) or actual == Decimal(repr(expected)), (
                row["key"],
                attr,
            )
        checked += 1
    assert checked >= 10
