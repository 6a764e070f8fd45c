"""Pricing: what a call costs under the built-in table and PriceBooks layered over it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from spendmeter_proxy.pricebooks import PriceBook, parse_pricebook_documents
from spendmeter_proxy.pricewatching import load_builtin_pricebooks
from spendmeter_proxy.pricing import PriceTable, format_usd, normalize_model_name, strip_date_suffix
from spendmeter_proxy.usage import Usage

M = Decimal(1_000_000)


def d(text: str) -> Decimal:
    return Decimal(text)


@pytest.fixture(scope="module")
def builtin() -> list[PriceBook]:
    return load_builtin_pricebooks()


def book(text: str, source: str = "file:/etc/spendmeter/prices.yaml") -> list[PriceBook]:
    return parse_pricebook_documents(text, source)


def table(builtin: list[PriceBook], *texts: str) -> PriceTable:
    books = list(builtin)
    for i, text in enumerate(texts):
        books += book(text, f"file:/prices/{i}.yaml")
    return PriceTable(books)


def test_openai_cached_input_is_billed_at_the_cached_rate(builtin: list[PriceBook]) -> None:
    # gpt-4o: 2.50 input, 1.25 cached input, 10.00 output per million tokens.
    price = PriceTable(builtin).price(
        "openai", "gpt-4o", Usage(input_tokens=4020, output_tokens=4, cached_input_tokens=4012)
    )
    assert price is not None
    assert price.cost_usd == (8 * d("2.50") + 4012 * d("1.25") + 4 * d("10.00")) / M
    assert format_usd(price.cost_usd) == "0.005075"
    assert price.source == "builtin:litellm-1.110.2"
    assert price.model_key == "gpt-4o"


def test_costs_print_as_plain_decimals() -> None:
    assert format_usd(Decimal("2.22E-5")) == "0.0000222"
    assert format_usd(Decimal("0.0000222000")) == "0.0000222"
    assert format_usd(Decimal("1E+1")) == "10"
    assert format_usd(Decimal("0E-12")) == "0"


def test_anthropic_cache_writes_5m_and_1h(builtin: list[PriceBook]) -> None:
    # claude-sonnet-4-5: 3 input, 0.30 cache read, 3.75 cache write (5m), 6 cache write (1h), 15 output.
    prices = PriceTable(builtin)
    usage = Usage(input_tokens=1532, output_tokens=33, cached_input_tokens=1111, cache_write_tokens=418)
    five_min = prices.price("anthropic", "claude-sonnet-4-5-20250929", usage)
    assert five_min is not None
    assert five_min.cost_usd == (3 * d("3") + 1111 * d("0.30") + 418 * d("3.75") + 33 * d("15")) / M
    usage_1h = Usage(
        input_tokens=1532,
        output_tokens=33,
        cached_input_tokens=1111,
        cache_write_tokens=418,
        cache_write_1h_tokens=400,
    )
    one_hour = prices.price("anthropic", "claude-sonnet-4-5-20250929", usage_1h)
    assert one_hour is not None
    assert (
        one_hour.cost_usd
        == (3 * d("3") + 1111 * d("0.30") + 18 * d("3.75") + 400 * d("6") + 33 * d("15")) / M
    )


def test_gemini_2_5_pro_above_200k_prices_the_whole_call_at_the_tier(builtin: list[PriceBook]) -> None:
    prices = PriceTable(builtin)
    big = prices.price(
        "gcp.gemini",
        "gemini-2.5-pro",
        Usage(input_tokens=250_000, output_tokens=1000, cached_input_tokens=50_000),
    )
    assert big is not None
    assert big.cost_usd == (200_000 * d("2.50") + 50_000 * d("0.25") + 1000 * d("15.00")) / M
    at_limit = prices.price("gcp.gemini", "gemini-2.5-pro", Usage(input_tokens=200_000, output_tokens=1000))
    assert at_limit is not None
    assert at_limit.cost_usd == (200_000 * d("1.25") + 1000 * d("10.00")) / M


def test_reasoning_is_priced_as_output(builtin: list[PriceBook]) -> None:
    prices = PriceTable(builtin)
    plain = prices.price("openai", "o3-mini-2025-01-31", Usage(input_tokens=7, output_tokens=87))
    reasoning = prices.price(
        "openai", "o3-mini-2025-01-31", Usage(input_tokens=7, output_tokens=87, reasoning_tokens=64)
    )
    assert plain is not None and reasoning is not None
    assert plain.cost_usd == reasoning.cost_usd > 0


NEGOTIATED = """
apiVersion: spendmeter.io/v1alpha1
kind: PriceBook
metadata: {name: negotiated-rates}
spec:
  models:
    - provider: openai
      match: '^gpt-4o(-\\d{4}-\\d{2}-\\d{2})?$'
      perMillionTokens: {input: 2.00, output: 8.00, cachedInput: 1.00}
  discounts:
    - {provider: openai, percent: 15}
"""


def test_a_later_book_overrides_the_builtin_with_a_regex(builtin: list[PriceBook]) -> None:
    prices = table(builtin, NEGOTIATED)
    price = prices.price("openai", "gpt-4o-2024-08-06", Usage(input_tokens=1000, output_tokens=100))
    assert price is not None
    assert price.cost_usd == (1000 * d("2.00") + 100 * d("8.00")) / M * d("0.85")
    assert price.source == "file:/prices/0.yaml"
    assert price.model_key == r"^gpt-4o(-\d{4}-\d{2}-\d{2})?$"
    # The regex does not match other models; they keep the built-in price, still with the openai discount.
    mini = prices.price("openai", "gpt-4o-mini", Usage(input_tokens=1000))
    assert mini is not None and mini.source.startswith("builtin:")
    assert mini.cost_usd == 1000 * d("0.15") / M * d("0.85")
    # The discount is scoped to openai.
    claude = prices.price("anthropic", "claude-sonnet-4-5", Usage(input_tokens=1000))
    assert claude is not None and claude.cost_usd == 1000 * d("3") / M


def test_discounts_most_specific_scope_wins_and_later_books_replace_the_same_scope(
    builtin: list[PriceBook],
) -> None:
    first = "discounts: [{provider: openai, percent: 10}, {provider: openai, model: gpt-4o, percent: 20}]"
    second = "discounts: [{provider: openai, model: gpt-4o, percent: 50}, {percent: 5}]"
    prices = table(builtin, first, second)
    usage = Usage(input_tokens=1_000_000)
    gpt4o = prices.price("openai", "gpt-4o", usage)
    mini = prices.price("openai", "gpt-4o-mini", usage)
    claude = prices.price("anthropic", "claude-sonnet-4-5", usage)
    assert gpt4o is not None and mini is not None and claude is not None
    assert gpt4o.cost_usd == d("2.50") * d("0.50")
    assert mini.cost_usd == d("0.15") * d("0.90")
    assert claude.cost_usd == d("3") * d("0.95")


def test_azure_deployment_alias(builtin: list[PriceBook]) -> None:
    prices = table(builtin, "aliases: [{provider: azure.ai.openai, from: prod-gpt4o, to: gpt-4o}]")
    usage = Usage(input_tokens=1000, output_tokens=10)
    price = prices.price("azure.ai.openai", "prod-gpt4o", usage)
    assert price is not None
    assert price.model_key == "gpt-4o"
    assert price.cost_usd == (1000 * d("2.50") + 10 * d("10.00")) / M
    # Scoped to Azure: the same name under another provider is not an alias.
    assert prices.price("openai", "prod-gpt4o", usage) is None


def test_bedrock_profile_alias_from_the_design(builtin: list[PriceBook]) -> None:
    alias = """
aliases:
  - {provider: aws.bedrock, from: 'us.anthropic.claude-sonnet-4-20250514-v1:0', to: claude-sonnet-4-20250514}
  - {provider: aws.bedrock, from: 'arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x7',
     to: claude-sonnet-4-20250514}
"""
    prices = table(builtin, alias)
    usage = Usage(input_tokens=36, output_tokens=73)
    for sent in (
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x7",
    ):
        price = prices.price("aws.bedrock", sent, usage)
        assert price is not None, sent
        assert price.model_key == "anthropic.claude-sonnet-4-20250514-v1:0"
        assert price.cost_usd == (36 * d("3") + 73 * d("15")) / M
    unaliased = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/other"
    assert PriceTable(builtin).price("aws.bedrock", unaliased, usage) is None


def test_alias_chains_are_followed_and_provider_scoped_aliases_win(builtin: list[PriceBook]) -> None:
    text = """
aliases:
  - {from: team-default, to: team-large}
  - {from: team-large, to: gpt-4o}
  - {provider: anthropic, from: team-default, to: claude-sonnet-4-5}
"""
    prices = table(builtin, text)
    usage = Usage(input_tokens=1_000_000)
    openai = prices.price("openai", "team-default", usage)
    anthropic = prices.price("anthropic", "team-default", usage)
    assert openai is not None and openai.cost_usd == d("2.50")
    assert anthropic is not None and anthropic.cost_usd == d("3")


def test_an_alias_loop_across_books_is_rejected(builtin: list[PriceBook]) -> None:
    with pytest.raises(ValueError, match=r"alias loop across price books .*: a -> b -> a"):
        table(builtin, "aliases: [{from: a, to: b}]", "aliases: [{from: b, to: a}]")


def test_missing_part_prices_fall_back(builtin: list[PriceBook]) -> None:
    text = """
models:
  - {model: house-llm, perMillionTokens: {input: 2, output: 6}}
  - {model: house-cache, perMillionTokens: {input: 2, output: 6, cacheWrite: 3}}
"""
    prices = table(builtin, text)
    usage = Usage(
        input_tokens=1000, cached_input_tokens=300, cache_write_tokens=200, cache_write_1h_tokens=50
    )
    plain = prices.price("openai", "house-llm", usage)
    cache = prices.price("openai", "house-cache", usage)
    assert plain is not None and cache is not None
    assert plain.cost_usd == 1000 * d("2") / M  # cached and written tokens at the input rate
    assert cache.cost_usd == (500 * d("2") + 300 * d("2") + 200 * d("3")) / M  # 1h writes at cacheWrite


def test_tier_parts_fall_back_to_the_tier_input_then_the_base(builtin: list[PriceBook]) -> None:
    text = """
models:
  - model: tiered
    perMillionTokens: {input: 1, output: 4, cachedInput: 0.1}
    tiers:
      - {aboveInputTokens: 100, perMillionTokens: {input: 2}}
      - {aboveInputTokens: 1000, perMillionTokens: {output: 9}}
"""
    prices = table(builtin, text)
    mid = prices.price("openai", "tiered", Usage(input_tokens=500, output_tokens=10, cached_input_tokens=100))
    high = prices.price(
        "openai", "tiered", Usage(input_tokens=5000, output_tokens=10, cached_input_tokens=100)
    )
    assert mid is not None and high is not None
    assert mid.cost_usd == (400 * d("2") + 100 * d("2") + 10 * d("4")) / M
    assert high.cost_usd == (4900 * d("1") + 100 * d("0.1") + 10 * d("9")) / M


def test_per_call_price(builtin: list[PriceBook]) -> None:
    prices = table(
        builtin,
        """
models:
  - {model: search-api, perCall: 0.005}
  - {model: hybrid, perCall: 0.01, perMillionTokens: {input: 1, output: 1}}
""",
    )
    search = prices.price("perplexity", "search-api", Usage())
    hybrid = prices.price("perplexity", "hybrid", Usage(input_tokens=1000))
    assert search is not None and search.cost_usd == d("0.005")
    assert hybrid is not None and hybrid.cost_usd == d("0.01") + 1000 * d("1") / M


def test_unknown_model_is_unpriced_not_free(builtin: list[PriceBook]) -> None:
    prices = PriceTable(builtin)
    assert prices.price("openai", "gpt-does-not-exist", Usage(input_tokens=10)) is None
    assert prices.price("anthropic", "claude-sonet-4-5", Usage()) is None
    assert prices.price("no-such-provider", "gpt-4o", Usage(input_tokens=10)) is None


def test_provider_scoping(builtin: list[PriceBook]) -> None:
    text = """
models:
  - {provider: openai, model: shared-name, perMillionTokens: {input: 1, output: 1}}
  - {model: anywhere, perMillionTokens: {input: 1, output: 1}}
"""
    prices = table(builtin, text)
    assert prices.price("openai", "shared-name", Usage(input_tokens=1)) is not None
    assert prices.price("x_ai", "shared-name", Usage(input_tokens=1)) is None
    assert prices.price("x_ai", "anywhere", Usage(input_tokens=1)) is not None
    # The built-in table is provider-scoped too: an OpenAI price never prices xAI's or Groq's calls.
    assert prices.price("x_ai", "gpt-4o", Usage(input_tokens=1)) is None


def test_dated_snapshots_fall_back_only_on_a_date_suffix(builtin: list[PriceBook]) -> None:
    prices = table(
        builtin, "models: [{provider: openai, model: acme-1, perMillionTokens: {input: 1, output: 1}}]"
    )
    usage = Usage(input_tokens=1)
    for snapshot in ("acme-1-2025-01-31", "acme-1-20250131"):
        found = prices.price("openai", snapshot, usage)
        assert found is not None and found.model_key == "acme-1"
    for not_a_date in ("acme-1-0131", "acme-1-2025-13-01", "acme-1-mini", "acme-1-20251340"):
        assert prices.price("openai", not_a_date, usage) is None
    # A snapshot the table knows is priced as itself: gpt-4o-2024-05-13 cost more than gpt-4o.
    old = prices.price("openai", "gpt-4o-2024-05-13", Usage(input_tokens=1_000_000))
    assert old is not None and old.model_key == "gpt-4o-2024-05-13" and old.cost_usd == d("5")
    claude = prices.price("anthropic", "claude-opus-4-5-20991231", Usage(input_tokens=1_000_000))
    assert claude is not None and claude.model_key == "claude-opus-4-5"


def test_date_suffix_and_normalized_names() -> None:
    assert strip_date_suffix("gpt-4o-2024-08-06") == "gpt-4o"
    assert strip_date_suffix("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert strip_date_suffix("claude-3-5-haiku@20241022") == "claude-3-5-haiku"
    assert strip_date_suffix("grok-4-0709") is None
    assert strip_date_suffix("gemini-2.5-pro-preview-06-05") is None
    assert normalize_model_name("us.anthropic.claude-sonnet-4-20250514-v1:0") == "claude-sonnet-4-20250514"
    assert (
        normalize_model_name(
            "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.amazon.nova-micro-v1:0"
        )
        == "nova-micro"
    )
    assert normalize_model_name("claude-3-5-haiku@20241022") == "claude-3-5-haiku-20241022"
    for untouched in ("gpt-4.1", "llama3.1-8b", "gemini-2.5-pro", "openai/gpt-oss-120b"):
        assert normalize_model_name(untouched) == untouched


def test_bedrock_ids_as_sent(builtin: list[PriceBook]) -> None:
    prices = PriceTable(builtin)
    usage = Usage(input_tokens=36, output_tokens=73)
    direct = prices.price("aws.bedrock", "anthropic.claude-sonnet-4-20250514-v1:0", usage)
    assert direct is not None
    for sent in (
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-20250514-v1:0",
    ):
        found = prices.price("aws.bedrock", sent, usage)
        assert found is not None, sent
        assert found.cost_usd == direct.cost_usd == (36 * d("3") + 73 * d("15")) / M


def test_openrouter_vendor_names_use_the_vendor_price(builtin: list[PriceBook]) -> None:
    prices = PriceTable(builtin)
    usage = Usage(input_tokens=17, output_tokens=2177, reasoning_tokens=960)
    via_openrouter = prices.price("openrouter", "openai/gpt-5-mini", usage)
    direct = prices.price("openai", "gpt-5-mini", usage)
    assert via_openrouter is not None and direct is not None
    assert via_openrouter.cost_usd == direct.cost_usd
    assert prices.price("openrouter", "minimax/minimax-m2:free", usage) is None
