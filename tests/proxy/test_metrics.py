"""The metric series a Grafana panel reads, checked through the registry as Prometheus would see them."""

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from spendmeter_proxy.identity import parse_identity
from spendmeter_proxy.metrics import Metrics
from spendmeter_proxy.usage import Usage

WL = {"workload": "chatbot", "workload_kind": "Deployment", "team": "search"}


def test_call_records_requests_tokens_cost_with_workload_labels() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg, WL)
    usage = Usage(input_tokens=100, output_tokens=20, cached_input_tokens=60, reasoning_tokens=5)
    m.observe_call(
        provider="openai",
        operation="chat",
        model="gpt-4o",
        status="2xx",
        stream=False,
        usage=usage,
        cost_usd=0.0005,
        duration_s=0.2,
        ttft_s=None,
    )
    labels = {**WL, "provider": "openai", "model": "gpt-4o"}
    assert (
        reg.get_sample_value("spendmeter_requests_total", {**labels, "operation": "chat", "status": "2xx"})
        == 1
    )
    assert reg.get_sample_value("spendmeter_tokens_total", {**labels, "type": "input"}) == 100
    assert reg.get_sample_value("spendmeter_tokens_total", {**labels, "type": "cached_input"}) == 60
    assert reg.get_sample_value("spendmeter_tokens_total", {**labels, "type": "reasoning"}) == 5
    assert reg.get_sample_value("spendmeter_tokens_total", {**labels, "type": "cache_write"}) is None
    assert reg.get_sample_value("spendmeter_cost_usd_total", labels) == pytest.approx(0.0005)
    assert (
        reg.get_sample_value("spendmeter_request_duration_seconds_count", {**labels, "stream": "false"}) == 1
    )
    assert reg.get_sample_value("spendmeter_unpriced_requests_total", labels) is None


def test_unpriced_call_counts_tokens_and_unpriced_but_no_cost() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg, WL)
    m.observe_call(
        provider="openai",
        operation="chat",
        model="my-ft",
        status="2xx",
        stream=True,
        usage=Usage(10, 5),
        cost_usd=None,
        duration_s=1.0,
        ttft_s=0.1,
    )
    labels = {**WL, "provider": "openai", "model": "my-ft"}
    assert reg.get_sample_value("spendmeter_unpriced_requests_total", labels) == 1
    assert reg.get_sample_value("spendmeter_cost_usd_total", labels) is None
    assert reg.get_sample_value("spendmeter_time_to_first_token_seconds_count", labels) == 1


def test_model_label_values_are_bounded() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg, WL, model_cap=3)
    assert [m.model(f"m{i}") for i in range(5)] == ["m0", "m1", "m2", "other", "other"]
    assert m.model("m1") == "m1"
    assert m.model(None) == "unknown"


def test_two_proxies_never_share_a_registry() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    Metrics(a, WL).observe_retry(provider="openai", model="gpt-4o")
    Metrics(b, WL)
    assert (
        b.get_sample_value("spendmeter_retries_total", {**WL, "provider": "openai", "model": "gpt-4o"})
        is None
    )
    assert b"spendmeter_retries_total" in generate_latest(a)


def test_identity_from_environment() -> None:
    ident = parse_identity(
        {
            "SPENDMETER_WORKLOAD": "chatbot",
            "SPENDMETER_WORKLOAD_KIND": "Deployment",
            "SPENDMETER_NAMESPACE": "shop",
            "SPENDMETER_POD": "chatbot-7d9-x",
            "SPENDMETER_LABEL_COST-CENTER": "cc1",
        }
    )
    assert ident.metric_labels() == {
        "workload": "chatbot",
        "workload_kind": "Deployment",
        "cost_center": "cc1",
    }
    assert parse_identity({}).workload == "unknown"
    with pytest.raises(ValueError, match="shadow"):
        parse_identity({"SPENDMETER_LABEL_MODEL": "x"})
