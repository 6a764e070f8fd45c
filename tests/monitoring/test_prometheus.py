"""Prometheus, for real: Debian's prometheus scrapes a running ``spendmeter proxy`` (explicit mode, in front
of the provider stand-in) while the official openai and anthropic SDKs call through it, as
``spendmeter demo`` does. Then what Prometheus stored must add up to the receipts, and every query of the
Grafana dashboard, with its variables filled in from Prometheus's own label values, must return data."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart.helming import CHART
from spendmeter_proxy import demo
from spendmeter_proxy.standin import Reply, Rule, StandIn

DASHBOARD = CHART / "dashboards" / "spendmeter.json"
SCRAPE_SECONDS = 1
ROUNDS = 2  # traffic, a scrape, traffic again: rates then see increases
# What Grafana would put for its own variables on a dashboard showing the last hour with this scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "2m", "$__range": "1h"}
# The target labels the PodMonitor keeps (the sidecar itself exports neither).
TARGET_LABELS = {"namespace": "demo", "pod": "demo-app-0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrometheusServer:
    url: str

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", f"{expr} gave a {data['resultType']}"
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, selector: str) -> list[str]:
        values: list[str] = self.get(f"/api/v1/label/{label}/values", **{"match[]": selector})
        return values


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_prometheus(binary: Path, work: Path, metrics_port: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "scrape_configs": [{
            "job_name": "spendmeter",
            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"], "labels": TARGET_LABELS}],
        }],
    }  # fmt: skip
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(work / "prometheus.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [str(binary), f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=work, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{(work / 'prometheus.log').read_text()[-3000:]}")
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    wait_until(ready, 60, "prometheus to be ready")
    return proc, url


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
        proc, url = start_prometheus(prometheus, work, metrics_port)
        prom = PrometheusServer(url)
        try:
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
        finally:
            proc.terminate()
            proc.wait(timeout=30)


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
