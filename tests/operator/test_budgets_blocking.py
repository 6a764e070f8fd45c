"""SpendBudgets end to end: a real API server, a real Prometheus scraping a real ``spendmeter proxy`` (in
explicit mode, in front of the provider stand-in), the operator evaluating the budget, and the official
openai SDK as the application.

The budget crosses its warning threshold, then its limit: the namespace's ConfigMap gets the block, and the
app's next call fails with the rate-limit error the SDK raises, naming the budget. Raising the limit lifts
the block and calls pass again. There is no kubelet, so the test copies the ConfigMap's ``budgets.yaml``
to the file the proxy reads, as the kubelet does for a mounted ConfigMap.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes
import openai
import pytest
import yaml
from conftest import ControlPlane, OperatorProcess, free_port, start_operator, wait_for
from prometheus_server import PrometheusServer
from spendmeter_operator import budgets, prices
from spendmeter_proxy.standin import StandIn

pytestmark = pytest.mark.controlplane
NAMESPACE = "budget-shop"
WORKLOAD = "chatbot"
BUDGET = "chat-budget"
CONFIGMAP = "spendmeter-prices"


class Proxy:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, metrics_port: int, ca_dir: Path) -> None:
        self.proc, self.port, self.metrics_port, self.ca_dir = proc, port, metrics_port, ca_dir


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    with StandIn(tls_dir=tmp_path_factory.mktemp("standin")) as server:
        yield server


@pytest.fixture(scope="module")
def budgets_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mounted") / "budgets.yaml"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, standin: StandIn, budgets_file: Path) -> Iterator[Proxy]:
    work = tmp_path_factory.mktemp("proxy")
    port, metrics_port = free_port(), free_port()
    argv = [sys.executable, "-m", "spendmeter_proxy", "proxy", "--mode", "explicit",
            "--listen-host", "127.0.0.1", "--listen-port", str(port),
            "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
            "--ca-dir", str(work / "ca"), "--upstream-ca", str(standin.ca_path),
            "--budgets", str(budgets_file), "--receipts", str(work / "receipts.jsonl"), "--log-level", "warning",
            "--connect-to", f"api.openai.com:443=127.0.0.1:{standin.port}"]  # fmt: skip
    env = {**os.environ, "SPENDMETER_WORKLOAD": WORKLOAD, "SPENDMETER_WORKLOAD_KIND": "Deployment",
           "SPENDMETER_NAMESPACE": NAMESPACE, "SPENDMETER_POD": f"{WORKLOAD}-0"}  # fmt: skip
    with open(work / "proxy.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the proxy exited:\n{(work / 'proxy.log').read_text()[-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2) as response:
            return bool(response.status == 200)

    try:
        wait_for(ready, 30, "the proxy to be ready")
        yield Proxy(proc, port, metrics_port, work / "ca")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, proxy: Proxy) -> Iterator[PrometheusServer]:
    jobs = [proxy_job(proxy)]
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), jobs) as server:
        yield server


def proxy_job(proxy: Proxy) -> dict[str, Any]:
    """The sidecar's scrape job; the namespace is the target's label, as a PodMonitor gives it."""
    target = {"targets": [f"127.0.0.1:{proxy.metrics_port}"], "labels": {"namespace": NAMESPACE}}
    return {"job_name": "spendmeter-proxy", "static_configs": [target]}


@pytest.fixture
def client(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> openai.OpenAI:
    """The application: the official SDK with its default base URL, pointed at the proxy as the operator
    points an app in explicit mode."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_dir / "ca-bundle.pem"))
    for name in ("NO_PROXY", "no_proxy", "OPENAI_BASE_URL", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    return openai.OpenAI(api_key="sk-test-not-a-real-key", max_retries=2)


def ask(client: openai.OpenAI, question: str) -> Decimal:
    """One chat call; its cost as the proxy stapled it to the answer."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": question}]
    )
    raw.parse()
    return Decimal(raw.headers["x-spendmeter-cost-usd"])


def status(cp: ControlPlane) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(cp.client())
    body = custom.get_namespaced_custom_object(
        budgets.GROUP, budgets.VERSION, NAMESPACE, budgets.PLURAL, BUDGET
    )
    return dict(body.get("status") or {})


def wait_state(cp: ControlPlane, state: str, timeout: float = 20) -> dict[str, Any]:
    return dict(wait_for(lambda: (s := status(cp)).get("state") == state and s, timeout, f"state {state}"))


def mount(cp: ControlPlane, budgets_file: Path) -> list[dict[str, Any]]:
    """What the kubelet does: the ConfigMap's budgets.yaml becomes the file the sidecar reads."""
    core = kubernetes.client.CoreV1Api(cp.client())
    data = core.read_namespaced_config_map(CONFIGMAP, NAMESPACE).data
    budgets_file.write_text(data[budgets.BLOCKS_KEY])
    prices_text = data[prices.CONFIGMAP_KEY]
    assert prices_text.startswith(prices.HEADER)  # prices.yaml is there too, with no PriceBook
    time.sleep(1.2)  # the proxy looks at its files at most once a second
    return list((yaml.safe_load(data[budgets.BLOCKS_KEY]) or {}).get("blocks") or [])


def test_a_blocking_budget_warns_then_blocks_then_lets_calls_pass_when_raised(
    control_plane: ControlPlane,
    prometheus: PrometheusServer,
    proxy: Proxy,
    client: openai.OpenAI,
    budgets_file: Path,
) -> None:
    cp = control_plane
    core = kubernetes.client.CoreV1Api(cp.client())
    custom = kubernetes.client.CustomObjectsApi(cp.client())
    op = start_operator(cp, "operator-budgets", "--standalone", "--prometheus-url", prometheus.url,
                        "--budget-interval", "1")  # fmt: skip
    try:
        prometheus.scrape([proxy_job(proxy), operator_job(op)])
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        wait_for(lambda: core.read_namespaced_service_account("default", NAMESPACE), 60, "service account")
        pod = {"metadata": {"name": f"{WORKLOAD}-0", "annotations": {"spendmeter.io/inject": "true"}},
               "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}  # fmt: skip
        core.create_namespaced_pod(NAMESPACE, pod)

        # The first call starts the counter: Prometheus's increase() counts what comes after it.
        cost = ask(client, "What is the capital of France?")
        series = f'spendmeter_cost_usd_total{{namespace="{NAMESPACE}", workload="{WORKLOAD}"}}'
        wait_for(lambda: prometheus.query(series), 15, "Prometheus to scrape the proxy")

        limit = float(cost) * 1.6  # one more call is 62% of it (warning at 50%), two more are 125%
        budget = {"apiVersion": f"{budgets.GROUP}/{budgets.VERSION}", "kind": "SpendBudget",
                  "metadata": {"name": BUDGET, "namespace": NAMESPACE},
                  "spec": {"window": "month", "timeZone": "Europe/Berlin", "limitUSD": limit,
                           "alertThresholds": [50], "action": "block", "workloads": [{"name": WORKLOAD}]}}  # fmt: skip
        custom.create_namespaced_custom_object(
            budgets.GROUP, budgets.VERSION, NAMESPACE, budgets.PLURAL, budget
        )
        ok = wait_state(cp, "ok")
        assert ok["spentUSD"] == 0 and ok["windowEnd"] > ok["lastEvaluated"] > ok["windowStart"]

        ask(client, "And of Italy?")
        warning = wait_state(cp, "warning")
        assert 50 <= warning["percent"] < 100 and warning["thresholdReached"] == 50
        evaluated = {c["type"]: c for c in warning["conditions"]}["Evaluated"]
        assert evaluated["status"] == "True" and "threshold 50% reached" in evaluated["message"]

        ask(client, "And of Spain?")
        exceeded = wait_state(cp, "exceeded")
        assert exceeded["percent"] >= 100
        blocking = {c["type"]: c for c in exceeded["conditions"]}["Blocking"]
        assert blocking["status"] == "True" and exceeded["windowEnd"] in blocking["message"]

        def block_written() -> list[dict[str, Any]]:
            return mount(cp, budgets_file)

        (block,) = wait_for(block_written, 15, "the block in the ConfigMap")
        assert block["budget"] == f"{NAMESPACE}/{BUDGET}" and block["workloads"] == [WORKLOAD]
        assert block["until"] == exceeded["windowEnd"]
        with pytest.raises(openai.RateLimitError) as refused:
            ask(client, "And of Portugal?")
        assert f"{NAMESPACE}/{BUDGET}" in refused.value.message
        assert exceeded["windowEnd"] in refused.value.message
        assert refused.value.response.headers["x-should-retry"] == "false"

        # The alert rule proposed for the chart fires for the threshold reached (and the limit).
        alert = (  # max by: a replica that led before may still show its last values
            "max by (namespace, budget, threshold) (spendmeter_budget_threshold_ratio)"
            " <= on (namespace, budget) group_left max by (namespace, budget) (spendmeter_budget_spent_ratio)"
        )
        firing = wait_for(lambda: prometheus.query(alert), 15, "the threshold alert expression")
        assert {
            (r["metric"]["namespace"], r["metric"]["budget"], r["metric"]["threshold"]) for r in firing
        } == {(NAMESPACE, BUDGET, "50")}

        # Raising the limit lifts the block at the next evaluation.
        patch = {"spec": {"limitUSD": float(cost) * 100}}
        custom.patch_namespaced_custom_object(
            budgets.GROUP, budgets.VERSION, NAMESPACE, budgets.PLURAL, BUDGET, patch
        )
        wait_state(cp, "ok")
        wait_for(lambda: block_written() == [], 15, "the block to be lifted")
        assert ask(client, "And of Portugal?") > 0
    finally:
        op.stop()


def operator_job(op: OperatorProcess) -> dict[str, Any]:
    """The operator's /metrics; its namespace and budget labels are its own (honor_labels)."""
    return {"job_name": "spendmeter-operator", "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{op.health_port}"]}]}  # fmt: skip


def test_a_budget_keeps_its_state_and_says_so_when_prometheus_cannot_be_reached(
    control_plane: ControlPlane,
) -> None:
    cp = control_plane
    core = kubernetes.client.CoreV1Api(cp.client())
    custom = kubernetes.client.CustomObjectsApi(cp.client())
    nowhere = f"http://127.0.0.1:{free_port()}"
    core.create_namespace({"metadata": {"name": "budget-dark"}})
    budget = {"apiVersion": f"{budgets.GROUP}/{budgets.VERSION}", "kind": "SpendBudget",
              "metadata": {"name": "daily", "namespace": "budget-dark"},
              "spec": {"window": "day", "limitUSD": 5}}  # fmt: skip
    custom.create_namespaced_custom_object(
        budgets.GROUP, budgets.VERSION, "budget-dark", budgets.PLURAL, budget
    )
    op = start_operator(cp, "operator-budgets-dark", "--standalone", "--prometheus-url", nowhere,
                        "--budget-interval", "1")  # fmt: skip
    try:

        def condition() -> Any:
            body = custom.get_namespaced_custom_object(
                budgets.GROUP, budgets.VERSION, "budget-dark", budgets.PLURAL, "daily"
            )
            found = [
                c for c in (body.get("status") or {}).get("conditions") or () if c["type"] == "Evaluated"
            ]
            return found and (body["status"], found[0])

        state, evaluated = wait_for(condition, 20, "the Evaluated condition")
        assert state["state"] == "unknown"
        assert evaluated["status"] == "False" and evaluated["reason"] == "PrometheusUnreachable"
        assert f"cannot reach Prometheus at {nowhere}" in evaluated["message"]
        assert "the state is unknown" in evaluated["message"]
    finally:
        op.stop()
