"""Prometheus, for real: Debian's prometheus scrapes a running ``spendmeter proxy`` (explicit mode, in front
of the provider stand-in) while the official openai and anthropic SDKs call through it, as
``spendmeter demo`` does. Then what Prometheus stored must add up to the receipts, and every query of the
Grafana dashboard, with its variables filled in from Prometheus's own label values, must return data."""

from __future__ import annotations

import json
import math
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chart.helming import CHART
from prometheus_server import PrometheusServer, wait_until
from spendmeter_proxy import demo
from spendmeter_proxy.standin import Reply, Rule, StandIn

DASHBOARD = CHART / "dashboards" / "spendmeter.json"
SCRAPE_SECONDS = 1
ROUNDS = 2  # traffic, a scrape, traffic again: rates then see increases
# What Grafana would put for its own variables on a dashboard showing the last hour with this scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "2m", "$__range": "1h"}
# The target labels the PodMonitor keeps (the sidecar itself exports neither).
TARGET_LABELS = {"namespace": "demo", "pod": "demo-app-0"}


@dataclass
class Scraped:
    prometheus: PrometheusServer
    receipts: list[dict[str, Any]]
    metrics_url: str  # the proxy's own /metrics

    def proxy_total(self, name: str) -> float:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return demo.metric_totals(response.read().decode()).get(name, 0.0)


def scrapes(prom: PrometheusServer) -> int:
    result = prom.query('count_over_time(up{job="spendmeter"}[1h])')
    return int(float(result[0]["value"][1])) if result else 0


def wait_for_scrape(prom: PrometheusServer) -> None:
    """Until a scrape has started after this call: the second one from now (the first may be under way)."""
    before = scrapes(prom)
    wait_until(lambda: scrapes(prom) >= before + 2, 30, "two more scrapes")


@pytest.fixture(scope="module")
def scraped(prometheus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    work = tmp_path_factory.mktemp("prometheus")
    rate_limited = Rule([Reply.error(429, "Rate limit reached", retry_after=0), Reply()] * ROUNDS,
                        model="gpt-4o-mini")  # fmt: skip
    with StandIn(tls_dir=work / "provider-tls", rules=[rate_limited]) as standin, \
            demo.running_proxy(work, standin) as (proxy_port, metrics_port):  # fmt: skip
        job = {"job_name": "spendmeter",
               "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"], "labels": TARGET_LABELS}]}  # fmt: skip
        with PrometheusServer(work / "prometheus", [job], interval=f"{SCRAPE_SECONDS}s") as prom:
            with pytest.MonkeyPatch.context() as env:
                env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
                env.setenv("SSL_CERT_FILE", str(work / "ca" / "ca-bundle.pem"))
                env.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
                env.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
                for name in ("NO_PROXY", "no_proxy", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
                    env.delenv(name, raising=False)
                import anthropic
                import openai

                for _ in range(ROUNDS):  # each round as a fresh app process: new clients, new connections
                    oa, an = openai.OpenAI(max_retries=2, timeout=20), anthropic.Anthropic(timeout=20)
                    for _title, scenario in demo.scenarios():
                        scenario(oa, an)
                    wait_for_scrape(prom)
            receipts = demo.read_receipts(work / "receipts.jsonl", ROUNDS * demo.EXPECTED_CALLS)
            assert len(receipts) == ROUNDS * demo.EXPECTED_CALLS
            wait_for_scrape(prom)
            yield Scraped(prom, receipts, f"http://127.0.0.1:{metrics_port}/metrics")


def test_prometheus_total_spend_equals_the_receipts(scraped: Scraped) -> None:
    (sample,) = scraped.prometheus.query("sum(spendmeter_cost_usd_total)")
    stored = float(sample["value"][1])
    receipts = sum(float(r["cost_usd"]) for r in scraped.receipts if r["cost_usd"] is not None)
    assert receipts > 0
    exported = scraped.proxy_total("spendmeter_cost_usd_total")
    assert math.isclose(stored, receipts, rel_tol=1e-9), (
        f"Prometheus {stored}, receipts {receipts}, proxy {exported}"
    )


def test_spend_keeps_the_target_and_workload_labels(scraped: Scraped) -> None:
    rows = scraped.prometheus.query(
        "sum by (namespace, pod, workload, workload_kind) (spendmeter_cost_usd_total)"
    )
    labels = [{k: v for k, v in r["metric"].items()} for r in rows]
    assert labels == [{**TARGET_LABELS, "workload": "demo-app", "workload_kind": "Deployment"}]


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>\w+)\)$")


def _regex_of(values: list[str]) -> str:
    """A multi-value variable as Grafana writes it into a PromQL regex: (a|b), regex-escaped."""
    return "(" + "|".join(re.escape(v).replace("\\", "\\\\") for v in values) + ")"


def _substitute(text: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        text = text.replace(name, variables[name])
    return text


@pytest.fixture(scope="module")
def variables(scraped: Scraped) -> dict[str, str]:
    """Each dashboard variable filled with every value its own query finds, in the dashboard's order."""
    result = dict(GRAFANA_VARIABLES)
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.match(variable["definition"])
        assert match, variable["definition"]
        selector = _substitute(match["selector"], result)
        values = scraped.prometheus.label_values(match["label"], selector)
        assert values, f"variable {variable['name']} has no values ({variable['definition']})"
        result[f"${variable['name']}"] = _regex_of(values)
    return result


def test_variables_find_the_traffics_labels(variables: dict[str, str]) -> None:
    assert variables["$namespace"] == "(demo)"
    assert variables["$workload"] == "(demo\\\\-app)"
    assert set(variables["$provider"].strip("()").split("|")) == {"openai", "anthropic"}
    assert "gpt\\\\-4o" in variables["$model"].strip("()").split("|")


@pytest.mark.parametrize(
    "title, expr",
    [(p["title"], t["expr"]) for p in _dashboard()["panels"] if p["type"] != "row" for t in p["targets"]],
)
def test_every_dashboard_query_returns_data(
    scraped: Scraped, variables: dict[str, str], title: str, expr: str
) -> None:
    query = _substitute(expr, variables)
    assert "$" not in query, f"{title}: a variable was left in {query}"
    result = scraped.prometheus.query(query)
    assert result, f"{title}: no data for {query}"
    values = [float(r["value"][1]) for r in result]
    assert any(math.isfinite(v) for v in values), f"{title}: only {values} for {query}"
