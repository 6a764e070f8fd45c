"""Spend reports (pure): rows per workload and model, and their CSV, JSON and FOCUS renderings.

FOCUS is the FinOps Foundation's open cost and usage format: with it, FinOps tools take LLM spend per
workload and model next to the cloud bill. Each row becomes one FOCUS ``Usage`` charge in USD for the
report period, with the tokens as consumed quantity; spendmeter's own dimensions ride in ``x_`` columns,
as the specification's extension rules ask.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

KEY = ("namespace", "workload", "provider", "model")


@dataclass(slots=True)
class Row:
    namespace: str
    workload: str
    provider: str
    model: str
    calls: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    cost_usd: float = 0.0
    wasted_usd: float = 0.0


def build_rows(
    cost: Iterable[tuple[dict[str, str], float]],
    calls: Iterable[tuple[dict[str, str], float]],
    tokens: Iterable[tuple[dict[str, str], float]],
    wasted: Iterable[tuple[dict[str, str], float]],
) -> list[Row]:
    """Joins per-series query results on (namespace, workload, provider, model); most expensive first."""
    rows: dict[tuple[str, ...], Row] = {}

    def row(labels: dict[str, str]) -> Row:
        ns, workload, provider, model = (labels.get(k, "") for k in KEY)
        key = (ns, workload, provider, model)
        if key not in rows:
            rows[key] = Row(ns, workload, provider, model)
        return rows[key]

    for labels, value in cost:
        row(labels).cost_usd += value
    for labels, value in calls:
        row(labels).calls += value
    for labels, value in tokens:
        kind = labels.get("type")
        if kind == "input":
            row(labels).input_tokens += value
        elif kind == "output":
            row(labels).output_tokens += value
    for labels, value in wasted:
        row(labels).wasted_usd += value
    return sorted(rows.values(), key=lambda r: (-r.cost_usd, *(getattr(r, k) for k in KEY)))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_table(rows: Sequence[Row]) -> str:
    head = (
        "WORKLOAD",
        "NAMESPACE",
        "PROVIDER",
        "MODEL",
        "CALLS",
        "IN TOKENS",
        "OUT TOKENS",
        "COST USD",
        "WASTED USD",
    )
    body = [
        (r.workload, r.namespace, r.provider, r.model, f"{r.calls:.0f}", f"{r.input_tokens:.0f}",
         f"{r.output_tokens:.0f}", f"{r.cost_usd:.4f}", f"{r.wasted_usd:.4f}")
        for r in rows
    ]  # fmt: skip
    total = sum(r.cost_usd for r in rows), sum(r.wasted_usd for r in rows)
    body.append(
        (
            "TOTAL",
            "",
            "",
            "",
            f"{sum(r.calls for r in rows):.0f}",
            "",
            "",
            f"{total[0]:.4f}",
            f"{total[1]:.4f}",
        )
    )
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    numeric = set(range(4, len(head)))
    lines = [
        "  ".join(
            v.rjust(w) if i in numeric else v.ljust(w)
            for i, (v, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in (head, *body)
    ]
    return "\n".join(s.rstrip() for s in lines) + "\n"


def render_csv(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(Row.__dataclass_fields__), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    return out.getvalue()


def render_json(rows: Sequence[Row], start: datetime, end: datetime) -> str:
    doc = {"start": _iso(start), "end": _iso(end), "currency": "USD", "rows": [asdict(r) for r in rows]}
    return json.dumps(doc, indent=2) + "\n"


FOCUS_COLUMNS = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency",
    "ChargePeriodEnd", "ChargePeriodStart", "ConsumedQuantity", "ConsumedUnit", "ContractedCost",
    "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingCategory", "PricingQuantity", "PricingUnit",
    "ProviderName", "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType",
    "ServiceCategory", "ServiceName", "SkuId", "SubAccountId", "SubAccountName", "Tags",
    "x_Workload", "x_Namespace", "x_Provider", "x_Model", "x_Calls", "x_InputTokens", "x_OutputTokens",
    "x_WastedCost",
)  # fmt: skip


def focus_records(
    rows: Sequence[Row], start: datetime, end: datetime, account: str
) -> list[dict[str, object]]:
    """One FOCUS ``Usage`` charge per row, billed in USD for the report period."""
    records = []
    for r in rows:
        tokens = r.input_tokens + r.output_tokens
        cost = round(r.cost_usd, 10)
        records.append({
            "BilledCost": cost, "BillingAccountId": account, "BillingAccountName": account,
            "BillingCurrency": "USD", "BillingPeriodEnd": _iso(end), "BillingPeriodStart": _iso(start),
            "ChargeCategory": "Usage", "ChargeClass": None,
            "ChargeDescription": f"LLM API usage of {r.model} ({r.provider}) by {r.namespace}/{r.workload}",
            "ChargeFrequency": "Usage-Based", "ChargePeriodEnd": _iso(end), "ChargePeriodStart": _iso(start),
            "ConsumedQuantity": tokens, "ConsumedUnit": "Tokens", "ContractedCost": cost, "EffectiveCost": cost,
            "InvoiceIssuerName": r.provider, "ListCost": cost, "PricingCategory": "Standard",
            "PricingQuantity": tokens, "PricingUnit": "Tokens", "ProviderName": r.provider,
            "PublisherName": r.provider, "RegionId": None, "RegionName": None,
            "ResourceId": f"{r.namespace}/{r.workload}", "ResourceName": r.workload, "ResourceType": "Workload",
            "ServiceCategory": "AI and Machine Learning", "ServiceName": f"{r.provider} LLM API",
            "SkuId": f"{r.provider}/{r.model}", "SubAccountId": r.namespace, "SubAccountName": r.namespace,
            "Tags": json.dumps({"workload": r.workload, "namespace": r.namespace, "model": r.model}, sort_keys=True),
            "x_Workload": r.workload, "x_Namespace": r.namespace, "x_Provider": r.provider, "x_Model": r.model,
            "x_Calls": r.calls, "x_InputTokens": r.input_tokens, "x_OutputTokens": r.output_tokens,
            "x_WastedCost": round(r.wasted_usd, 10),
        })  # fmt: skip
    return records


def render_focus(rows: Sequence[Row], start: datetime, end: datetime, account: str) -> str:
    """The FOCUS rows as CSV (the format FinOps tools ingest)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FOCUS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in focus_records(rows, start, end, account):
        writer.writerow({k: ("" if v is None else v) for k, v in record.items()})
    return out.getvalue()
