"""`spendmeter report` against a real Prometheus holding known data (backfilled with promtool)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_server import PrometheusServer, backfill, requires_prometheus

# Three hours of one-minute samples, ending well in the past; every counter grows at a constant rate,
# so Prometheus's increase() over any part of it is exact.
END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
START = END - timedelta(hours=3)
SERIES = [
    # (labels, cost/min, calls/min, input tokens/min, output tokens/min, wasted/min)
    ({"namespace": "shop", "workload": "chatbot", "provider": "openai", "model": "gpt-4o"}, 0.02, 4, 4000, 400, 0.005),
    ({"namespace": "shop", "workload": "indexer", "provider": "openai", "model": "text-embedding-3-small"},
     0.001, 10, 20000, 0, 0.0),
    ({"namespace": "search", "workload": "ranker", "provider": "anthropic", "model": "claude-sonnet-4-5"},
     0.05, 2, 3000, 900, 0.0),
]  # fmt: skip


def openmetrics() -> str:
    families: dict[str, list[str]] = {
        "spendmeter_cost_usd": [], "spendmeter_requests": [], "spendmeter_tokens": [],
        "spendmeter_wasted_cost_usd": [],
    }  # fmt: skip
    for minute in range(0, 181):
        t = int((START + timedelta(minutes=minute)).timestamp())
        for labels, cost, calls, tin, tout, wasted in SERIES:
            base = ",".join(f'{k}="{v}"' for k, v in labels.items()) + ',workload_kind="Deployment"'
            families["spendmeter_cost_usd"].append(f"spendmeter_cost_usd_total{{{base}}} {cost * minute} {t}")
            families["spendmeter_requests"].append(
                f'spendmeter_requests_total{{{base},operation="chat",status="2xx"}} {calls * minute} {t}'
            )
            for kind, rate in (("input", tin), ("output", tout)):
                families["spendmeter_tokens"].append(
                    f'spendmeter_tokens_total{{{base},type="{kind}"}} {rate * minute} {t}'
                )
            families["spendmeter_wasted_cost_usd"].append(
                f'spendmeter_wasted_cost_usd_total{{{base},reason="duplicate"}} {wasted * minute} {t}'
            )
    out = []
    for name, lines in families.items():
        out.append(f"# TYPE {name} counter")
        out.extend(lines)
    out.append("# EOF")
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    work = tmp_path_factory.mktemp("report-prometheus")
    server = PrometheusServer(work, interval="1m")
    backfill(openmetrics(), server.storage)
    with server:
        yield server


def report(prometheus: PrometheusServer, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "spendmeter"
    return subprocess.run([str(script), "report", "--prometheus", prometheus.url, *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def window(hours_from: int, hours_to: int) -> list[str]:
    return ["--start", (START + timedelta(hours=hours_from)).isoformat(),
            "--end", (START + timedelta(hours=hours_to)).isoformat()]  # fmt: skip


@requires_prometheus
def test_json_report_has_the_known_spend_per_workload_and_model(prometheus: PrometheusServer) -> None:
    done = report(prometheus, *window(1, 3), "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    rows = {(r["namespace"], r["workload"], r["model"]): r for r in doc["rows"]}
    assert set(rows) == {(ns["namespace"], ns["workload"], ns["model"]) for ns, *_ in SERIES}
    for labels, cost, calls, tin, tout, wasted in SERIES:
        r = rows[labels["namespace"], labels["workload"], labels["model"]]
        assert r["cost_usd"] == pytest.approx(cost * 120, rel=1e-9)
        assert r["calls"] == pytest.approx(calls * 120, rel=1e-9)
        assert (r["input_tokens"], r["output_tokens"]) == (
            pytest.approx(tin * 120),
            pytest.approx(tout * 120),
        )
        assert r["wasted_usd"] == pytest.approx(wasted * 120, abs=1e-9)
    assert [r["workload"] for r in doc["rows"]] == ["ranker", "chatbot", "indexer"]  # most expensive first
    assert "querying Prometheus [4/4]" in done.stderr  # the progress indicator


@requires_prometheus
def test_namespace_filter_and_table(prometheus: PrometheusServer) -> None:
    done = report(prometheus, *window(0, 3), "--namespace", "shop")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split() == ["WORKLOAD", "NAMESPACE", "PROVIDER", "MODEL", "CALLS", "IN", "TOKENS", "OUT",
                                "TOKENS", "COST", "USD", "WASTED", "USD"]  # fmt: skip
    assert "ranker" not in done.stdout
    total = lines[-1].split()
    assert total[0] == "TOTAL" and float(total[-2]) == pytest.approx((0.02 + 0.001) * 180, abs=1e-4)


@requires_prometheus
def test_focus_csv_is_ingestible(prometheus: PrometheusServer, tmp_path: Path) -> None:
    out = tmp_path / "focus.csv"
    done = report(prometheus, *window(1, 3), "--format", "focus", "--output", str(out))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 3
    mandatory = ("BilledCost", "BillingAccountId", "BillingCurrency", "BillingPeriodStart", "BillingPeriodEnd",
                 "ChargeCategory", "ChargePeriodStart", "ChargePeriodEnd", "EffectiveCost", "ListCost",
                 "ContractedCost", "InvoiceIssuerName", "ProviderName", "PublisherName", "ServiceCategory",
                 "ServiceName", "PricingUnit", "PricingQuantity", "ConsumedQuantity", "ConsumedUnit")  # fmt: skip
    for row in rows:
        assert all(row[c] != "" for c in mandatory), row
        assert row["BillingCurrency"] == "USD" and row["ChargeCategory"] == "Usage"
        assert row["ServiceCategory"] == "AI and Machine Learning"
        assert row["ChargePeriodStart"] == (START + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    chatbot = next(r for r in rows if r["x_Workload"] == "chatbot")
    assert float(chatbot["BilledCost"]) == pytest.approx(0.02 * 120)
    assert chatbot["ResourceId"] == "shop/chatbot" and chatbot["SubAccountId"] == "shop"
    assert json.loads(chatbot["Tags"]) == {"model": "gpt-4o", "namespace": "shop", "workload": "chatbot"}
    assert sum(float(r["BilledCost"]) for r in rows) == pytest.approx((0.02 + 0.001 + 0.05) * 120)


@requires_prometheus
def test_csv_report(prometheus: PrometheusServer) -> None:
    done = report(prometheus, *window(2, 3), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["workload"] for r in rows} == {"chatbot", "indexer", "ranker"}
    assert float(next(r for r in rows if r["workload"] == "indexer")["calls"]) == pytest.approx(600)


def test_unreachable_prometheus_is_a_clear_error() -> None:
    script = Path(sys.executable).parent / "spendmeter"
    done = subprocess.run([str(script), "report", "--prometheus", "http://127.0.0.1:9", "--last", "1d"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "cannot reach Prometheus at http://127.0.0.1:9" in done.stderr


def test_bad_period_is_rejected() -> None:
    script = Path(sys.executable).parent / "spendmeter"
    done = subprocess.run([str(script), "report", "--prometheus", "http://127.0.0.1:9", "--last", "yesterday"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "like 30d" in done.stderr
