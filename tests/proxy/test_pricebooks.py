"""PriceBook parsing: the shapes a file or CRD may take, and an error message for every mistake."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml
from spendmeter_proxy.pricebooks import parse_pricebook, parse_pricebook_documents

SOURCE = "file:/etc/spendmeter/prices.yaml"

DESIGN_EXAMPLE = """
apiVersion: spendmeter.io/v1alpha1
kind: PriceBook
metadata: {name: negotiated-rates}
spec:
  models:
    - provider: openai                # optional: any provider when omitted
      model: gpt-4o                   # exact name, or
      perMillionTokens: {input: 2.50, output: 10.00, cachedInput: 1.25, cacheWrite: 3.75, cacheWrite1h: 6.00}
      tiers:                          # above this many input tokens the whole call is priced at these rates
        - {aboveInputTokens: 200000, perMillionTokens: {input: 5.00, output: 15.00, cachedInput: 2.50}}
    - match: '^gpt-4o(-\\d{4}-\\d{2}-\\d{2})?$'
      perMillionTokens: {input: 2.50, output: 10.00}
  discounts:
    - {provider: openai, percent: 15}
  aliases:                            # deployment or profile names that are not model names
    - {provider: azure.ai.openai, from: prod-gpt4o, to: gpt-4o}
    - {provider: aws.bedrock, from: 'us.anthropic.claude-sonnet-4-20250514-v1:0',
       to: claude-sonnet-4-20250514}
"""


def test_the_design_example_parses() -> None:
    (book,) = parse_pricebook_documents(DESIGN_EXAMPLE, SOURCE)
    assert book.name == "negotiated-rates"
    assert book.source == SOURCE
    exact, regex = book.models
    assert (exact.provider, exact.model, exact.key) == ("openai", "gpt-4o", "gpt-4o")
    assert exact.rates.input == Decimal("2.5") and exact.rates.cache_write_1h == Decimal("6")
    assert exact.tiers[0].above_input_tokens == 200_000 and exact.tiers[0].rates.cached_input == Decimal(
        "2.5"
    )
    assert exact.tiers[0].rates.cache_write is None
    assert regex.provider is None and regex.match is not None and regex.match.search("gpt-4o-2024-08-06")
    assert book.discounts[0].percent == Decimal(15)
    assert [(a.provider, a.source, a.target) for a in book.aliases] == [
        ("azure.ai.openai", "prod-gpt4o", "gpt-4o"),
        ("aws.bedrock", "us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4-20250514"),
    ]


def test_full_object_and_bare_spec_mean_the_same() -> None:
    full = yaml.safe_load(DESIGN_EXAMPLE)
    from_full = parse_pricebook(full, SOURCE)
    from_spec = parse_pricebook(full["spec"], SOURCE)
    assert (from_full.models, from_full.discounts, from_full.aliases) == (
        from_spec.models,
        from_spec.discounts,
        from_spec.aliases,
    )


def test_several_documents_in_one_file() -> None:
    text = """
models: [{model: a, perMillionTokens: {input: 1, output: 2}}]
---
---
apiVersion: spendmeter.io/v1alpha1
kind: PriceBook
metadata: {name: second}
spec:
  discounts: [{percent: 10}]
"""
    books = parse_pricebook_documents(text, SOURCE)
    assert [b.source for b in books] == [f"{SOURCE}#0", f"{SOURCE}#1"]
    assert books[0].models[0].model == "a" and books[1].name == "second"


def test_prices_keep_their_decimal_digits() -> None:
    (book,) = parse_pricebook_documents(
        "models: [{model: a, perMillionTokens: {input: 0.075, output: '0.3', cachedInput: 3}}]", SOURCE
    )
    rates = book.models[0].rates
    assert (rates.input, rates.output, rates.cached_input) == (Decimal("0.075"), Decimal("0.3"), Decimal(3))


def test_a_crd_read_from_the_api_may_carry_status() -> None:
    obj = yaml.safe_load(DESIGN_EXAMPLE) | {"status": {"observedGeneration": 3}}
    assert parse_pricebook(obj, "pricebook:negotiated-rates").name == "negotiated-rates"


def _entry(fields: str) -> str:
    return f"models:\n  - {{{fields}}}\n"


ERRORS = [
    (
        _entry("model: a, perMillionTokens: {input: -1, output: 2}"),
        "models[0].perMillionTokens.input: must not be negative (got -1)",
    ),
    (
        _entry("model: a, perMillionTokens: {input: 1, output: 2, cached: 1}"),
        "models[0].perMillionTokens: unknown field 'cached'",
    ),
    (
        _entry("model: a, price: 3, perMillionTokens: {input: 1, output: 2}"),
        "models[0]: unknown field 'price'",
    ),
    ("model: a\n", ": unknown field 'model' (allowed: aliases, discounts, models)"),
    (_entry("provider: openai, perMillionTokens: {input: 1, output: 2}"), "models[0]: needs exactly one of"),
    (
        _entry("model: a, match: '^a$', perMillionTokens: {input: 1, output: 2}"),
        "models[0]: needs exactly one of",
    ),
    (
        _entry("match: '^gpt-(4o', perMillionTokens: {input: 1, output: 2}"),
        "models[0].match: is not a valid regex: missing ), unterminated subpattern",
    ),
    (_entry("model: a"), "models[0]: needs 'perMillionTokens' or 'perCall'"),
    (_entry("model: a, perMillionTokens: {output: 2}"), "models[0].perMillionTokens.input: is required"),
    (_entry("model: a, perMillionTokens: {input: 1}"), "models[0].perMillionTokens.output: is required"),
    (
        _entry("model: a, perMillionTokens: {input: cheap, output: 2}"),
        "perMillionTokens.input: must be a number",
    ),
    (_entry("model: a, perMillionTokens: {input: .nan, output: 2}"), "input: must be a finite number"),
    (_entry("model: a, perMillionTokens: {input: true, output: 2}"), "input: must be a number (got True)"),
    (_entry("model: a, perCall: -0.01"), "models[0].perCall: must not be negative"),
    (_entry("model: '', perCall: 1"), "models[0].model: must be a non-empty string"),
    (
        _entry("model: a, perCall: 1, tiers: [{aboveInputTokens: -5, perMillionTokens: {input: 1}}]"),
        "models[0].tiers[0].aboveInputTokens: must be a whole number >= 0 (got -5)",
    ),
    (
        _entry("model: a, perCall: 1, tiers: [{aboveInputTokens: 10, perMillionTokens: {}}]"),
        "models[0].tiers[0].perMillionTokens: must give at least one price",
    ),
    (
        _entry("model: a, perCall: 1, tiers: [{aboveInputTokens: 10}]"),
        "tiers[0].perMillionTokens: is required",
    ),
    (
        _entry(
            "model: a, perCall: 1, tiers: [{aboveInputTokens: 9, perMillionTokens: {input: 1}}, "
            "{aboveInputTokens: 9, perMillionTokens: {input: 2}}]"
        ),
        "models[0].tiers: two tiers have the same aboveInputTokens",
    ),
    ("models: {a: 1}\n", "models: must be a list (got dict)"),
    (
        "discounts: [{provider: openai, percent: 101}]\n",
        "discounts[0].percent: must be between 0 and 100 (got 101)",
    ),
    ("discounts: [{provider: openai, percent: -5}]\n", "discounts[0].percent: must not be negative (got -5)"),
    ("discounts: [{provider: openai}]\n", "discounts[0].percent: is required"),
    ("aliases: [{from: a}]\n", "aliases[0].to: is required"),
    ("aliases: [{from: a, to: b, provider: openai, note: x}]\n", "aliases[0]: unknown field 'note'"),
    (
        "aliases: [{from: a, to: b}, {from: b, to: c}, {from: c, to: a}]\n",
        "aliases: alias loop: a -> b -> c -> a",
    ),
    ("aliases: [{from: a, to: a}]\n", "aliases: alias loop: a -> a"),
    (
        "aliases: [{provider: x_ai, from: a, to: b}, {from: b, to: a}]\n",
        "aliases: alias loop: a -> b -> a",
    ),
    (
        "apiVersion: spendmeter.io/v2\nkind: PriceBook\nspec: {}\n",
        "apiVersion: must be 'spendmeter.io/v1alpha1'",
    ),
    ("apiVersion: spendmeter.io/v1alpha1\nkind: SpendBudget\nspec: {}\n", "kind: must be 'PriceBook'"),
    ("kind: PriceBook\nspec: {models: []}\nextra: 1\n", ": unknown field 'extra'"),
    (
        "kind: PriceBook\nspec:\n  models: [{model: a}]\n",
        "spec.models[0]: needs 'perMillionTokens' or 'perCall'",
    ),
    ("- just\n- a list\n", "a PriceBook must be a mapping (got list)"),
    ("models: [\n", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_every_mistake_is_named_with_source_and_path(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_pricebook_documents(text, SOURCE)
    assert str(caught.value).startswith(f"{SOURCE}")
    assert message in str(caught.value)


def test_errors_in_a_later_document_name_the_document() -> None:
    text = "models: []\n---\nmodels: [{model: a, perMillionTokens: {input: -1, output: 1}}]\n"
    with pytest.raises(
        ValueError, match=r"^file:/etc/spendmeter/prices.yaml#1: models\[0\]\.perMillionTokens\.input"
    ):
        parse_pricebook_documents(text, SOURCE)
