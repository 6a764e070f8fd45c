"""The provider stand-in, checked the way its users see it: real clients (httpx, the openai and anthropic
SDKs) over loopback TLS that trusts only the stand-in's test CA."""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import ssl
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import anthropic
import brotli  # type: ignore[import-untyped]
import httpx
import httpx2
import openai
import pytest

try:
    from compression import zstd  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found, no-redef, unused-ignore]

from samples import samples_dir
from spendmeter_proxy.standin import (
    SAMPLE_HEADER,
    Exchange,
    Fault,
    Reply,
    Rule,
    StandIn,
    load_exchanges,
    parse_exchange,
    parse_rules,
)
from spendmeter_proxy.standin.framing import split_event_stream, split_sse, sse_data

SAMPLES = samples_dir()
EXCHANGES = load_exchanges(SAMPLES)
BY_ID = {e.id: e for e in EXCHANGES}
DELAY_S = 0.02


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    with StandIn(EXCHANGES, tls_dir=tmp_path_factory.mktemp("tls"), chunk_delay_s=DELAY_S) as server:
        yield server


@pytest.fixture
def server(standin: StandIn) -> StandIn:
    standin.clear_rules()
    standin.clear_requests()
    return standin


@pytest.fixture
def client(server: StandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=server.ca_path)) as c:
        yield c


def send(
    client: httpx.Client, exchange: Exchange, body: bytes | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    """The recorded request, addressed to the provider's host name (Host header and SNI)."""
    assert exchange.path is not None
    return client.post(
        exchange.path,
        content=exchange.request_body if body is None else body,
        headers={"host": exchange.host, "content-type": "application/json", **(headers or {})},
        extensions={"sni_hostname": exchange.host},
    )


def stream_pieces(
    client: httpx.Client, exchange: Exchange, body: bytes | None = None
) -> list[tuple[float, bytes]]:
    """Each HTTP chunk of a streamed answer with its arrival time."""
    assert exchange.path is not None
    pieces = []
    with client.stream(
        "POST",
        exchange.path,
        content=exchange.request_body if body is None else body,
        headers={"host": exchange.host},
        extensions={"sni_hostname": exchange.host},
    ) as response:
        assert response.status_code == exchange.status
        for piece in response.iter_raw():
            pieces.append((time.monotonic(), piece))
    return pieces


JSON_SAMPLES = [
    e.id
    for e in EXCHANGES
    if not e.stream and e.path and e.request_body and e.response_body.lstrip()[:1] == b"{"
]


@pytest.mark.parametrize("sample_id", JSON_SAMPLES)
def test_json_sample_is_replayed_byte_exact(client: httpx.Client, sample_id: str) -> None:
    exchange = BY_ID[sample_id]
    twins = [
        e
        for e in EXCHANGES
        if (e.host, e.path, e.request_body) == (exchange.host, exchange.path, exchange.request_body)
    ]
    # Identical recorded requests (a cache write, then a read) need the recording named.
    headers = {SAMPLE_HEADER: exchange.id} if len(twins) > 1 else {}
    response = send(client, exchange, headers=headers)
    assert response.status_code == exchange.status
    assert response.content == exchange.response_body
    assert response.headers["content-length"] == str(len(exchange.response_body))
    assert "transfer-encoding" not in response.headers


def test_sse_stream_arrives_event_by_event_with_pauses(client: httpx.Client) -> None:
    exchange = BY_ID["anthropic__stream_plain"]
    events = split_sse(exchange.response_body)
    pieces = stream_pieces(client, exchange)
    assert [p for _, p in pieces] == events
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(pieces)]
    assert min(gaps) >= DELAY_S * 0.8


def test_openai_usage_chunk_only_when_include_usage_was_asked(client: httpx.Client, server: StandIn) -> None:
    exchange = BY_ID["openai__chat_stream_include_usage_tool_calls"]
    assert exchange.request_body is not None
    asked = b"".join(p for _, p in stream_pieces(client, exchange))
    doc = json.loads(exchange.request_body)
    del doc["stream_options"]
    not_asked = b"".join(p for _, p in stream_pieces(client, exchange, json.dumps(doc).encode()))

    def usage_chunks(body: bytes) -> list[dict[str, int]]:
        chunks = [json.loads(d) for d in map(sse_data, split_sse(body)) if d.startswith(b"{")]
        return [c["usage"] for c in chunks if c["choices"] == [] and c["usage"]]

    assert asked == exchange.response_body
    assert [u["prompt_tokens"] for u in usage_chunks(asked)] == [exchange.expected["input_tokens"]]
    assert usage_chunks(not_asked) == []
    assert not_asked.endswith(b"data: [DONE]\n\n")
    assert [r.include_usage for r in server.requests] == [True, False]


def test_aws_event_stream_frames_arrive_intact_one_by_one(client: httpx.Client) -> None:
    exchange = BY_ID["bedrock__converse_stream_nova"]
    pieces = [p for _, p in stream_pieces(client, exchange)]
    assert b"".join(pieces) == exchange.response_body
    assert len(pieces) == len(split_event_stream(exchange.response_body))
    for frame in pieces:
        total, _headers_length = struct.unpack_from(">II", frame)
        assert total == len(frame)
        assert struct.unpack_from(">I", frame, 8)[0] == zlib.crc32(frame[:8])
        assert struct.unpack_from(">I", frame, total - 4)[0] == zlib.crc32(frame[: total - 4])


def test_sni_gives_a_certificate_for_each_provider_host(server: StandIn) -> None:
    context = ssl.create_default_context(cafile=server.ca_path)
    for name in (
        "api.openai.com",
        "myresource.openai.azure.com",
        "bedrock-runtime.eu-central-1.amazonaws.com",
        "llm-gateway.internal.test",
    ):
        with (
            socket.create_connection(server.address) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            cert = tls.getpeercert()
            assert ("DNS", name) in cert["subjectAltName"] or any(
                v.startswith("*.") and name.endswith(v[1:]) for _, v in cert["subjectAltName"]
            )
            assert tls.selected_alpn_protocol() in (None, "http/1.1")


def test_untrusted_client_is_refused(server: StandIn) -> None:
    with httpx.Client(verify=True) as c, pytest.raises(httpx.ConnectError):
        c.get(server.url)


def openai_client(server: StandIn, max_retries: int = 0) -> openai.OpenAI:
    http = httpx.Client(verify=ssl.create_default_context(cafile=server.ca_path))
    return openai.OpenAI(
        api_key="test", base_url=server.url + "/v1", http_client=http, max_retries=max_retries
    )


def anthropic_client(server: StandIn) -> anthropic.Anthropic:
    http = httpx2.Client(verify=ssl.create_default_context(cafile=server.ca_path))
    return anthropic.Anthropic(api_key="test", base_url=server.url, http_client=http, max_retries=0)


def test_openai_sdk_parses_a_synthetic_completion(server: StandIn) -> None:
    question = [{"role": "user", "content": "What is the capital of France?"}]
    completion = openai_client(server).chat.completions.create(model="gpt-4.1-mini", messages=question)
    again = openai_client(server).chat.completions.create(model="gpt-4.1-mini", messages=question)
    assert completion.model == "gpt-4.1-mini"
    assert completion.choices[0].message.content
    assert completion.usage is not None and again.usage is not None
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert again.usage == completion.usage
    assert server.requests[-1].source == "synthetic"


def test_openai_sdk_token_counts_grow_with_the_prompt(server: StandIn) -> None:
    client = openai_client(server)
    short = client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}])
    long = client.chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi " * 400}]
    )
    assert short.usage is not None and long.usage is not None
    assert long.usage.prompt_tokens > short.usage.prompt_tokens + 200


def test_openai_sdk_synthetic_stream_honours_include_usage(server: StandIn) -> None:
    client = openai_client(server)
    messages = [{"role": "user", "content": "Say something."}]
    plain = list(client.chat.completions.create(model="gpt-4.1-nano", messages=messages, stream=True))
    with_usage = list(
        client.chat.completions.create(
            model="gpt-4.1-nano", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.usage is None for c in plain)
    assert with_usage[-1].choices == [] and with_usage[-1].usage is not None
    assert with_usage[-1].usage.completion_tokens == len([c for c in with_usage if c.choices]) - 2


def test_openai_sdk_parses_a_replayed_completion(server: StandIn) -> None:
    exchange = BY_ID["openai__chat_plain"]
    completion = openai_client(server).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    assert server.requests[-1].source == exchange.id
    assert completion.model == exchange.expected["model"]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == exchange.expected["input_tokens"]
    assert completion.usage.completion_tokens == exchange.expected["output_tokens"]


def test_openai_sdk_embeddings(server: StandIn) -> None:
    result = openai_client(server).embeddings.create(
        model="text-embedding-3-large", input=["one", "two words"]
    )
    assert [len(d.embedding) for d in result.data] == [3072, 3072]
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens > 0


def test_scripted_429_then_200_is_retried_by_the_sdk(server: StandIn) -> None:
    server.add_rule(Rule(replies=[Reply.error(429, "Rate limit reached", retry_after=0), Reply()]))
    completion = openai_client(server, max_retries=2).chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert completion.choices[0].message.content
    statuses = [(r.status, r.headers.get("x-stainless-retry-count")) for r in server.requests]
    assert statuses == [(429, "0"), (200, "1")]
    assert server.requests[0].body_sha256 == server.requests[1].body_sha256


def test_scripted_error_uses_the_provider_error_shape(server: StandIn) -> None:
    server.add_rule(Rule(replies=[Reply.error(529, "Overloaded")], path="/v1/messages"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        anthropic_client(server).messages.create(
            model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 529
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "overloaded_error"
    server.add_rule(Rule(replies=[Reply.error(500)], path="/v1/chat/completions"))
    with pytest.raises(openai.InternalServerError) as failed:
        openai_client(server).chat.completions.create(model="gpt-4.1-mini", messages=[])
    assert isinstance(failed.value.body, dict) and failed.value.body["type"] == "server_error"


def test_fault_reset_after_bytes(client: httpx.Client, server: StandIn) -> None:
    exchange = BY_ID["openai__chat_stream_include_usage_tool_calls"]
    server.add_rule(Rule(replies=[Reply(fault=Fault(reset_after_bytes=600))]))
    received = bytearray()
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        for _, piece in stream_pieces(client, exchange):
            received += piece
    assert server.requests[-1].source == exchange.id


def test_fault_truncated_stream(client: httpx.Client, server: StandIn) -> None:
    exchange = BY_ID["anthropic__stream_plain"]
    server.add_rule(Rule(replies=[Reply(fault=Fault(drop_last_events=2))]))
    with pytest.raises(httpx.RemoteProtocolError):
        stream_pieces(client, exchange)
    server.add_rule(Rule(replies=[Reply(fault=Fault(drop_last_events=2, end_cleanly=True))]))
    body = b"".join(p for _, p in stream_pieces(client, exchange))
    assert body == b"".join(split_sse(exchange.response_body)[:-2])
    assert b"message_stop" not in body and b"message_start" in body


def test_fault_pause_before_first_byte(client: httpx.Client, server: StandIn) -> None:
    server.add_rule(Rule(replies=[Reply(fault=Fault(first_byte_delay_s=0.3))]))
    started = time.monotonic()
    response = send(client, BY_ID["openai__chat_plain"])
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


DECODERS = {
    "gzip": gzip.decompress,
    "br": brotli.decompress,
    "zstd": zstd.decompress,
    "deflate": zlib.decompress,
}


@pytest.mark.parametrize("coding", sorted(DECODERS))
def test_compressed_answer_decodes_to_the_recording(
    client: httpx.Client, server: StandIn, coding: str
) -> None:
    exchange = BY_ID["openai__chat_plain"]
    server.add_rule(Rule(replies=[Reply(compress=coding)], repeat_last=True))
    with client.stream(
        "POST", exchange.path or "", content=exchange.request_body, headers={"accept-encoding": coding}
    ) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == coding
    assert DECODERS[coding](raw) == exchange.response_body
    plain = client.post(
        exchange.path or "", content=exchange.request_body, headers={"accept-encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers
    assert plain.content == exchange.response_body


def test_compressed_stream_is_still_delivered_event_by_event(client: httpx.Client, server: StandIn) -> None:
    exchange = BY_ID["anthropic__stream_plain"]
    server.add_rule(Rule(replies=[Reply(compress="gzip")]))
    decoder = zlib.decompressobj(wbits=31)
    with client.stream(
        "POST", exchange.path or "", content=exchange.request_body, headers={"accept-encoding": "gzip"}
    ) as response:
        decoded = [decoder.decompress(p) for p in response.iter_raw()]
    assert [d for d in decoded if d] == split_sse(exchange.response_body)


def test_anthropic_sdk_replayed_message(server: StandIn) -> None:
    exchange = BY_ID["anthropic__messages_cache_read_only"]
    message = anthropic_client(server).messages.create(
        model="claude-sonnet-4-5", max_tokens=1024, messages=[{"role": "user", "content": "hi"}]
    )
    assert server.requests[-1].source == exchange.id
    assert message.model == exchange.expected["model"]
    assert message.usage.cache_read_input_tokens == exchange.expected["cached_input_tokens"]


def test_anthropic_sdk_synthetic_message_and_stream(server: StandIn) -> None:
    client = anthropic_client(server)
    messages = [{"role": "user", "content": "Tell me about the sea."}]
    message = client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=messages)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert message.model == final.model == "claude-haiku-4-5"
    assert text == "".join(b.text for b in message.content if b.type == "text")
    assert final.usage.output_tokens == message.usage.output_tokens > 1
    assert final.usage.input_tokens == message.usage.input_tokens


def test_anthropic_prompt_cache_is_written_then_read(server: StandIn) -> None:
    client = anthropic_client(server)
    system = [{"type": "text", "text": "Reference text. " * 400, "cache_control": {"type": "ephemeral"}}]
    first = client.messages.create(
        model="claude-haiku-4-5", max_tokens=20, system=system, messages=[{"role": "user", "content": "Q1"}]
    )
    second = client.messages.create(
        model="claude-haiku-4-5", max_tokens=20, system=system, messages=[{"role": "user", "content": "Q2"}]
    )
    assert first.usage.cache_creation_input_tokens and not first.usage.cache_read_input_tokens
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.input_tokens == first.usage.input_tokens


def test_openai_prompt_cache_reports_cached_tokens_on_repeat(server: StandIn) -> None:
    client = openai_client(server)
    system = {"role": "system", "content": "Reference text. " * 400}
    first = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[system, {"role": "user", "content": "Q1"}],  # type: ignore[list-item]
    )
    second = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[system, {"role": "user", "content": "Q2"}],  # type: ignore[list-item]
    )
    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens_details is not None and second.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    assert 1024 <= cached <= second.usage.prompt_tokens and cached % 128 == 0


def test_sample_header_selects_a_recording(client: httpx.Client, server: StandIn) -> None:
    exchange = BY_ID["openai__chat_error_429_tokens_rate_limit"]
    response = client.post(
        "/v1/chat/completions", json={"model": "gpt-4o"}, headers={SAMPLE_HEADER: exchange.id}
    )
    assert response.status_code == 429
    assert response.content == exchange.response_body


def test_request_log_never_holds_bodies_or_keys(server: StandIn) -> None:
    openai_client(server).chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "a secret prompt"}]
    )
    record = server.requests[-1]
    assert "secret" not in repr(record)
    assert "test" not in json.dumps(record.headers)
    assert "authorization" not in record.headers
    assert record.model == "gpt-4.1-mini" and record.host == "127.0.0.1"


def test_plain_http_mode_and_keep_alive() -> None:
    with StandIn(chunk_delay_s=0) as server, httpx.Client(base_url=server.url) as c:
        assert server.url.startswith("http://")
        for _ in range(3):
            r = c.post(
                "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x", "dimensions": 4}
            )
            assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 4
        unknown = c.post("/v1beta/models/gemini-2.5-flash:generateContent", json={})
        assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"


def test_runs_as_a_process_and_prints_a_ready_line(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spendmeter_proxy.standin",
            "--listen",
            "127.0.0.1:0",
            "--tls-dir",
            str(tmp_path),
            "--samples",
            str(SAMPLES),
            "--chunk-delay-ms",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("standin ready https://127.0.0.1:")
        url = line.split()[2]
        exchange = BY_ID["openai__chat_plain"]
        with httpx.Client(verify=ssl.create_default_context(cafile=tmp_path / "ca.pem")) as c:
            r = c.post(url + "/v1/chat/completions", content=exchange.request_body)
        assert r.content == exchange.response_body
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_parsers_reject_malformed_input() -> None:
    with pytest.raises(ValueError, match="replies"):
        parse_rules([{"path": "/v1/chat"}])
    with pytest.raises(ValueError, match="unknown keys"):
        parse_rules([{"replies": [{"status": 429, "retry": 1}]}])
    with pytest.raises(ValueError, match="status"):
        parse_rules([{"replies": [{"status": 99}]}])
    with pytest.raises(ValueError, match="status"):
        parse_exchange({"id": "x__y", "request": {"method": "POST", "host": "h"}, "response": {"body": ""}})
    rules = parse_rules(
        [{"model": "gpt-4o", "replies": [{"status": 429, "headers": {"Retry-After": "0"}}, {}]}]
    )
    assert rules[0].replies[0].headers == (("retry-after", "0"),)
