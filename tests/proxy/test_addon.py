"""The addon inside mitmproxy's own test harness (taddons, tflow): what the app and Prometheus see."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from flows import make_flow, pump, respond
from mitmproxy import http
from mitmproxy.test import taddons, tflow
from prometheus_client import CollectorRegistry
from spendmeter_proxy.addon import SpendMeter
from spendmeter_proxy.identity import Identity

WL = {"workload": "chatbot", "workload_kind": "Deployment"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
CHAT_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 4020,
        "completion_tokens": 4,
        "total_tokens": 4024,
        "prompt_tokens_details": {"cached_tokens": 4012},
    },
}


@pytest.fixture
def meter(tmp_path: Path):
    reg = CollectorRegistry()
    addon = SpendMeter(reg, Identity("chatbot", "Deployment", "shop", "chatbot-1"))
    with taddons.context(addon) as tctx:
        tctx.configure(addon, spendmeter_receipts=str(tmp_path / "receipts.jsonl"))
        yield addon, reg, tctx, tmp_path / "receipts.jsonl"


def receipts(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def call(addon: SpendMeter, f: http.HTTPFlow) -> None:
    addon.request(f)
    addon.responseheaders(f)
    if f.response is not None and callable(f.response.stream):
        body = f.response.raw_content or b""
        f.response.raw_content = b""
        f.response.raw_content = pump(f, body, 7)
    addon.response(f)


def test_priced_call_gets_headers_metrics_and_receipt(meter) -> None:
    addon, reg, _, rpath = meter
    f = make_flow(CHAT)
    respond(f, 200, orjson.dumps(CHAT_ANSWER))
    call(addon, f)
    h = f.response.headers
    # gpt-4o: 8 uncached at 2.50/M, 4012 cached at 1.25/M, 4 output at 10.00/M
    expected = (
        Decimal(8) * Decimal("2.5e-6") + Decimal(4012) * Decimal("1.25e-6") + Decimal(4) * Decimal("10e-6")
    )
    assert Decimal(h["x-spendmeter-cost-usd"]) == expected
    assert h["x-spendmeter-cost-status"] == "priced"
    assert h["x-spendmeter-model"] == "gpt-4o-2024-08-06"
    assert h["x-spendmeter-provider"] == "openai"
    assert h["x-spendmeter-input-tokens"] == "4020"
    assert h["x-spendmeter-cached-input-tokens"] == "4012"
    assert h["x-spendmeter-output-tokens"] == "4"
    labels = {**WL, "provider": "openai", "model": "gpt-4o-2024-08-06"}
    assert reg.get_sample_value("spendmeter_cost_usd_total", labels) == pytest.approx(float(expected))
    assert reg.get_sample_value("spendmeter_tokens_total", {**labels, "type": "cached_input"}) == 4012
    (r,) = receipts(rpath)
    assert r["request_id"] == h["x-spendmeter-request-id"]
    assert r["cost_usd"] == h["x-spendmeter-cost-usd"] and r["namespace"] == "shop"
    assert "hello" not in rpath.read_text() and "hi" not in json.dumps(r["requested_model"])


def test_unknown_model_is_unpriced_never_zero(meter) -> None:
    addon, reg, _, rpath = meter
    f = make_flow({**CHAT, "model": "acme-finetune-77"})
    respond(f, 200, orjson.dumps({**CHAT_ANSWER, "model": "acme-finetune-77"}))
    call(addon, f)
    assert "x-spendmeter-cost-usd" not in f.response.headers
    assert f.response.headers["x-spendmeter-cost-status"] == "unpriced"
    labels = {**WL, "provider": "openai", "model": "acme-finetune-77"}
    assert reg.get_sample_value("spendmeter_unpriced_requests_total", labels) == 1
    assert reg.get_sample_value("spendmeter_cost_usd_total", labels) is None
    assert receipts(rpath)[0]["cost_usd"] is None


def test_error_answer_is_counted_by_status_and_forwarded_untouched(meter) -> None:
    addon, reg, _, _ = meter
    f = make_flow(CHAT)
    body = b'{"error":{"message":"Rate limit","type":"tokens","param":null,"code":"rate_limit_exceeded"}}'
    respond(f, 429, body)
    call(addon, f)
    assert f.response.raw_content == body
    assert f.response.headers["x-spendmeter-cost-status"] == "no-usage"
    assert (
        reg.get_sample_value(
            "spendmeter_requests_total",
            {**WL, "provider": "openai", "operation": "chat", "model": "gpt-4o", "status": "4xx"},
        )
        == 1
    )


def test_malformed_body_flows_on(meter) -> None:
    addon, _reg, _, _ = meter
    f = make_flow(CHAT)
    respond(f, 200, b"{not json\xff")
    call(addon, f)
    assert f.response.raw_content == b"{not json\xff"
    assert f.response.headers["x-spendmeter-cost-status"] == "no-usage"


def test_gzip_body_is_read_and_left_compressed(meter) -> None:
    addon, _, _, _ = meter
    f = make_flow(CHAT)
    raw = gzip.compress(orjson.dumps(CHAT_ANSWER))
    respond(f, 200, raw, headers={"content-encoding": "gzip"})
    call(addon, f)
    assert f.response.raw_content == raw
    assert f.response.headers["x-spendmeter-input-tokens"] == "4020"


def test_traffic_that_is_not_metered_is_streamed_not_buffered(meter) -> None:
    addon, _, _, _ = meter
    f = make_flow(b"", host="downloads.example.com", path="/big.iso")
    addon.request(f)
    respond(f, 200, b"", content_type="application/octet-stream")
    addon.responseheaders(f)
    assert f.response.stream is True


def test_non_llm_path_and_host_are_ignored(meter) -> None:
    addon, _reg, _, rpath = meter
    for f in (make_flow(b"", path="/v1/models"), make_flow(CHAT, host="example.com")):
        respond(f, 200, orjson.dumps(CHAT_ANSWER))
        call(addon, f)
        assert "x-spendmeter-provider" not in f.response.headers
    assert not rpath.exists() or rpath.read_text() == ""


def test_duplicate_costs_are_wasted_and_retries_counted(meter) -> None:
    addon, reg, _, rpath = meter
    for _ in range(2):
        f = make_flow(CHAT)
        respond(f, 200, orjson.dumps(CHAT_ANSWER))
        call(addon, f)
    labels = {**WL, "provider": "openai", "model": "gpt-4o-2024-08-06"}
    cost = reg.get_sample_value("spendmeter_cost_usd_total", labels)
    assert reg.get_sample_value("spendmeter_wasted_cost_usd_total", {**labels, "reason": "duplicate"}) == (
        pytest.approx(cost / 2)
    )
    f = make_flow({**CHAT, "model": "gpt-4o-mini"})
    respond(f, 429, b'{"error":{"message":"slow down"}}')
    call(addon, f)
    f = make_flow({**CHAT, "model": "gpt-4o-mini"}, headers={"x-stainless-retry-count": "1"})
    respond(f, 200, orjson.dumps({**CHAT_ANSWER, "model": "gpt-4o-mini-2024-07-18"}))
    call(addon, f)
    assert (
        reg.get_sample_value(
            "spendmeter_retries_total", {**WL, "provider": "openai", "model": "gpt-4o-mini-2024-07-18"}
        )
        == 1
    )
    flags = [(r["duplicate"], r["retry"]) for r in receipts(rpath)]
    assert flags == [(False, False), (True, False), (False, False), (False, True)]


def sse(*objs: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in objs) + b"data: [DONE]\n\n"


CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    "usage": None,
}
USAGE_CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "model": "gpt-4o-2024-08-06",
    "choices": [],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}


def test_stream_without_include_usage_is_metered_and_client_sees_its_own_stream(meter) -> None:
    addon, _reg, _, rpath = meter
    f = make_flow({**CHAT, "stream": True})
    addon.request(f)
    sent = orjson.loads(f.request.content)
    assert sent["stream_options"] == {"include_usage": True}
    respond(f, 200, sse(CHUNK, USAGE_CHUNK), content_type="text/event-stream")
    addon.responseheaders(f)
    out = pump(f, f.response.raw_content, 5)
    addon.response(f)
    assert out == sse(CHUNK)  # the usage chunk the client did not ask for is gone
    r = receipts(rpath)[0]
    assert (r["input_tokens"], r["output_tokens"], r["stream"]) == (10, 2, True)
    assert r["time_to_first_token_ms"] is not None
    assert Decimal(r["cost_usd"]) == Decimal(10) * Decimal("2.5e-6") + Decimal(2) * Decimal("10e-6")


def test_stream_with_include_usage_gets_x_spendmeter(meter) -> None:
    addon, _, _, rpath = meter
    f = make_flow({**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    original = f.request.content
    addon.request(f)
    assert f.request.content == original
    respond(f, 200, sse(CHUNK, USAGE_CHUNK), content_type="text/event-stream")
    addon.responseheaders(f)
    out = pump(f, f.response.raw_content, 1 << 20)
    addon.response(f)
    events = [e for e in out.split(b"\n\n") if e and e != b"data: [DONE]"]
    last = orjson.loads(events[-1][len(b"data: ") :])
    assert last["usage"]["prompt_tokens"] == 10
    assert last["x_spendmeter"]["cost_usd"] == receipts(rpath)[0]["cost_usd"]
    assert last["x_spendmeter"]["model"] == "gpt-4o-2024-08-06"


def test_cut_stream_counts_partial_usage_as_error(meter) -> None:
    addon, reg, _, rpath = meter
    events = [
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929",'
        b'"usage":{"input_tokens":20,"output_tokens":1}}}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":7}}\n\n',
    ]
    f = make_flow(
        {"model": "claude-sonnet-4-5", "stream": True, "messages": []},
        host="api.anthropic.com",
        path="/v1/messages",
    )
    addon.request(f)
    respond(f, 200, b"", content_type="text/event-stream")
    addon.responseheaders(f)
    for e in events:
        assert f.response.stream(e) == e  # forwarded unchanged, at once
    f.error = tflow.terr("upstream reset")
    addon.error(f)
    r = receipts(rpath)[0]
    assert (r["status"], r["input_tokens"], r["output_tokens"]) == (None, 20, 7)
    assert r["error"] and r["cost_usd"] is not None
    assert (
        reg.get_sample_value(
            "spendmeter_requests_total",
            {
                **WL,
                "provider": "anthropic",
                "operation": "chat",
                "model": "claude-sonnet-4-5-20250929",
                "status": "error",
            },
        )
        == 1
    )


def test_exceptions_inside_hooks_are_counted_not_raised(meter) -> None:
    addon, reg, _, _ = meter
    f = make_flow(CHAT)
    addon.request(f)
    f.metadata["spendmeter"].route = None  # a state the code cannot handle
    respond(f, 200, orjson.dumps(CHAT_ANSWER))
    addon.responseheaders(f)
    addon.response(f)
    assert reg.get_sample_value("spendmeter_proxy_errors_total", {"kind": "response"}) == 1


def test_app_hanging_up_after_the_end_marker_is_a_whole_answer(meter) -> None:
    addon, _, _, rpath = meter
    f = make_flow({**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    addon.request(f)
    respond(f, 200, b"", content_type="text/event-stream")
    addon.responseheaders(f)
    f.response.stream(sse(CHUNK, USAGE_CHUNK))  # the whole stream, [DONE] included ...
    f.error = tflow.terr("Client disconnected.")  # ... then the SDK closes before the body's last bytes
    addon.error(f)
    r = receipts(rpath)[0]
    assert (r["status"], r["error"], r["input_tokens"]) == (200, None, 10)


def test_app_hanging_up_mid_stream_is_an_error(meter) -> None:
    addon, _, _, rpath = meter
    f = make_flow({**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    addon.request(f)
    respond(f, 200, b"", content_type="text/event-stream")
    addon.responseheaders(f)
    f.response.stream(b"data: " + orjson.dumps(CHUNK) + b"\n\n")
    f.error = tflow.terr("Client disconnected.")
    addon.error(f)
    r = receipts(rpath)[0]
    assert r["status"] is None and r["error"] == "Client disconnected."


def test_non_utf8_bytes_in_a_body_do_not_hide_its_usage(meter) -> None:
    addon, _, _, _ = meter
    f = make_flow(CHAT)
    body = orjson.dumps(CHAT_ANSWER).replace(b'"hello"', b'"hel\xfflo"')
    respond(f, 200, body)
    call(addon, f)
    assert f.response.raw_content == body
    assert f.response.headers["x-spendmeter-input-tokens"] == "4020"


def test_receipt_details_name_openrouters_upstream_and_its_reported_cost(meter) -> None:
    addon, _, _, rpath = meter
    body = {**CHAT_ANSWER, "model": "x-ai/grok-4", "provider": "xAI",
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 0.00042}}  # fmt: skip
    f = make_flow({**CHAT, "model": "x-ai/grok-4"}, host="openrouter.ai", path="/api/v1/chat/completions")
    respond(f, 200, orjson.dumps(body))
    call(addon, f)
    r = receipts(rpath)[0]
    assert r["provider"] == "openrouter" and r["details"] == {"upstream_provider": "xAI"}
    assert r["provider_reported_cost_usd"] == 0.00042
