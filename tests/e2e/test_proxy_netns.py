"""The sidecar proxy end to end: a pod namespace with the init step's rules and the proxy, a provider
namespace with the provider stand-in, and an unmodified application using the official SDKs.

The application (``apps/llm_app.py``) runs as root in the pod with the SDKs' default base URLs, dummy API
keys and ``SSL_CERT_FILE`` pointing at the proxy's CA bundle, exactly what the injection gives a pod. Its
HTTPS traffic is redirected by iptables to the proxy, which runs as a non-root uid in transparent mode
and reaches the stand-in under the providers' real names. Where a test must compare with what the app
would see without the proxy, it runs the same scenario "directly": as the proxy's uid, which the rules let
through, trusting the stand-in's CA instead. One lab serves the whole module.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import wsproto
import wsproto.events
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from prometheus_client.parser import text_string_to_metric_families
from samples import expected_usage, load_samples, samples_dir
from spendmeter_proxy.testca import CertificateAuthority

from .netns import PROVIDER_HOSTS, NetnsLab, in_netns, requires_netns

pytestmark = [requires_netns, pytest.mark.root]

PROXY_UID = 15500
PROXY_PORT = 15001
METRICS_PORT = 9464
# The venv's interpreter lives under /root (mode 700): a non-root uid could not even exec it. The proxy
# keeps CAP_DAC_READ_SEARCH (read and search anywhere, no write, no other privilege), so it stays a
# non-root process, uid 15500 as iptables' owner match sees it, that can still load the interpreter.
PROXY_CAPS = ("dac_read_search",)
APP = Path(__file__).parent / "apps" / "llm_app.py"
SECOND_PROVIDER_IP = "172.30.213.3"  # only in the provider namespace: the websocket echo server
NON_LLM_HOST = "downloads.example.test"  # served by the stand-in, never decrypted by the proxy
WS_HOST = "ws.example.test"  # a websocket service that is no LLM API
LLM_WS_HOST = "realtime.example.test"  # a websocket service the proxy is told to meter
API_KEYS = {
    "OPENAI_API_KEY": "sk-e2e-" + secrets.token_hex(12),
    "ANTHROPIC_API_KEY": "sk-ant-e2e-" + secrets.token_hex(12),
}
PROMPT_MARKER = "confidential-" + secrets.token_hex(8)  # in every prompt: it must never leak
TIMING_MODEL = "gpt-4.1-nano"  # streams with a pause between events
TIMING_PAUSE_S = 0.3
FAULT_RULES: list[dict[str, Any]] = [
    {"model": "gpt-4.1-mini", "replies": [{"status": 429, "headers": {"retry-after": "0"}}]},
    {
        "model": TIMING_MODEL,
        "stream": True,
        "repeat_last": True,
        "replies": [{"chunk_delay_ms": TIMING_PAUSE_S * 1000}],
    },
    {"model": "o1", "repeat_last": True, "replies": [{"status": 400, "message": "max_tokens is too large"}]},
    {
        "model": "o1-pro",
        "repeat_last": True,
        "replies": [{"status": 503, "message": "the engine is overloaded"}],
    },
    {
        "model": "gpt-4o-2024-05-13",
        "stream": True,
        "repeat_last": True,
        "replies": [{"fault": {"drop_last_events": 1}}],
    },
    {
        "model": "gpt-4o-mini-2024-07-18",
        "stream": True,
        "repeat_last": True,
        "replies": [{"fault": {"reset_after_bytes": 700}}],
    },
    {"model": "gpt-4.1", "stream": True, "repeat_last": True, "replies": [{"chunk_delay_ms": 200}]},
    # gzip's trailer goes out one pause after the last event: the body ends well after [DONE].
    {
        "model": "gpt-4-turbo",
        "stream": True,
        "repeat_last": True,
        "replies": [{"compress": "gzip", "chunk_delay_ms": 300}],
    },
]
# Made-up exchanges, served on the x-standin-sample header (or to a request naming no model): answers
# a provider should never give, but a proxy must pass on.
MALFORMED_SAMPLE = "e2e__chat_malformed_json"
NON_UTF8_SAMPLE = "e2e__chat_non_utf8_content"
NON_UTF8_BODY = (
    b'{"id":"chatcmpl-e2e","object":"chat.completion","created":1700000000,"model":"gpt-4o-2024-08-06",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"caf\xe9 \xff"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}'
)


def prompt(text: str) -> str:
    return f"{PROMPT_MARKER}: {text}"


def extra_samples() -> list[dict[str, Any]]:
    def sample(sample_id: str, body: bytes) -> dict[str, Any]:
        return {
            "id": sample_id,
            "request": {"method": "POST", "host": "api.openai.com", "path": "/v1/chat/completions"},
            "response": {
                "status": 200,
                "headers": {"content-type": "application/json"},
                "body": base64.b64encode(body).decode(),
                "body_encoding": "base64",
            },
            "expected": {"provider": "openai", "streaming": False},
        }

    return [
        sample(MALFORMED_SAMPLE, b'{"id":"chatcmpl-e2e","object":"chat.completion","usage":{"prompt_tok'),
        sample(NON_UTF8_SAMPLE, NON_UTF8_BODY),
    ]


# --- the websocket echo server -------------------------------------------------------------------------


class EchoServer:
    """A TLS websocket server that echoes text messages (wsproto), on a socket in the provider namespace."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock, self.context = sock, context
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        with suppress(OSError), self.context.wrap_socket(raw, server_side=True) as conn:
            ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, wsproto.events.Request):
                        conn.sendall(ws.send(wsproto.events.AcceptConnection()))
                    elif isinstance(event, wsproto.events.TextMessage):
                        conn.sendall(ws.send(wsproto.events.Message(data=f"echo: {event.data}")))
                    elif isinstance(event, wsproto.events.Ping):
                        conn.sendall(ws.send(event.response()))
                    elif isinstance(event, wsproto.events.CloseConnection):
                        conn.sendall(ws.send(event.response()))
                        return


# --- the lab -------------------------------------------------------------------------------------------


@dataclass
class ProxyLab:
    """The running lab: run the app through the proxy or directly, read receipts and metrics."""

    lab: NetnsLab
    ca_dir: Path
    standin_ca: Path
    receipts_path: Path
    proxy_out: Path
    proxy_err: Path
    ws_trust: Path
    consumed: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def app(
        self,
        scenario: str,
        args: Mapping[str, Any] | None = None,
        *,
        direct: bool = False,
        trust: Path | None = None,
    ) -> dict[str, Any]:
        """What the app observed in ``scenario``; ``direct`` runs it past the proxy, to compare with."""
        cafile = trust or (self.standin_ca if direct else self.ca_dir / "ca-bundle.pem")
        env = {**self.env, "SSL_CERT_FILE": str(cafile)}
        argv = [sys.executable, str(APP), scenario, json.dumps(dict(args or {}))]
        done = self.lab.run(
            self.lab.pod,
            argv,
            user=PROXY_UID if direct else None,
            caps=PROXY_CAPS if direct else (),
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def receipts(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.receipts_path.read_text().splitlines() if line.strip()]

    def new_receipts(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next ``count`` receipts after those already taken (waits for them to be written)."""
        deadline = time.monotonic() + timeout
        while True:
            fresh = self.receipts()[self.consumed :]
            if len(fresh) >= count or time.monotonic() > deadline:
                self.consumed += len(fresh)
                assert len(fresh) == count, f"expected {count} new receipts, got {fresh}"
                return fresh
            time.sleep(0.05)

    def no_new_receipts(self, settle: float = 0.5) -> None:
        time.sleep(settle)
        assert self.receipts()[self.consumed :] == []

    def metrics_text(self) -> str:
        return http_get(self.lab, f"http://127.0.0.1:{METRICS_PORT}/metrics").decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels`` (0 when there is none)."""
        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


def http_get(lab: NetnsLab, url: str) -> bytes:
    """GET ``url`` from the pod namespace (the metrics port is on the pod's loopback)."""

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body

    return in_netns(lab.pod, fetch)


def wait_ready(lab: NetnsLab, proxy: subprocess.Popen[str], err: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.poll() is not None:
            pytest.fail(f"the proxy exited with {proxy.returncode}: {err.read_text()}")
        with suppress(OSError):
            if http_get(lab, f"http://127.0.0.1:{METRICS_PORT}/readyz") == b"ok\n":
                return
        time.sleep(0.1)
    pytest.fail(f"the proxy was not ready in {timeout}s: {err.read_text()}")


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_standin(lab: NetnsLab, base: Path) -> subprocess.Popen[str]:
    """The provider stand-in on the provider's address, port 443: the corpus, two more samples, the rules."""
    samples = base / "samples"
    samples.mkdir()
    for path in samples_dir().glob("*__*.json"):
        (samples / path.name).symlink_to(path)
    for doc in extra_samples():
        (samples / f"{doc['id']}.json").write_text(json.dumps(doc))
    rules = base / "rules.yaml"
    rules.write_text(yaml.safe_dump(FAULT_RULES))
    argv = [sys.executable, "-m", "spendmeter_proxy.standin", f"--listen={lab.provider_ip}:443"]
    argv += [f"--tls-dir={base / 'standin'}", f"--samples={samples}", f"--rules={rules}"]
    return lab.popen(lab.provider, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def start_echo_server(lab: NetnsLab, base: Path, ca: CertificateAuthority) -> socket.socket:
    """The websocket echo server on the second provider address, with a certificate from ``ca``."""
    issued = ca.issue([WS_HOST, LLM_WS_HOST])
    (base / "echo.pem").write_bytes(issued.chain_pem)
    (base / "echo-key.pem").write_bytes(issued.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(base / "echo.pem", base / "echo-key.pem")
    sock = lab.socket(lab.provider)
    sock.bind((SECOND_PROVIDER_IP, 443))
    sock.listen(16)
    EchoServer(sock, context)
    return sock


def start_proxy(
    lab: NetnsLab, command: list[str], ca_dir: Path, upstream_ca: Path, receipts: Path, out: Path, err: Path
) -> subprocess.Popen[str]:
    argv = [*command, "proxy", "--mode=transparent", f"--listen-port={PROXY_PORT}"]
    argv += [f"--metrics-port={METRICS_PORT}", f"--ca-dir={ca_dir}", f"--upstream-ca={upstream_ca}"]
    argv += [f"--receipts={receipts}", f"--llm-host={LLM_WS_HOST}=openai"]
    with out.open("w") as out_file, err.open("w") as err_file:
        return lab.popen(lab.pod, argv, user=PROXY_UID, caps=PROXY_CAPS, stdout=out_file, stderr=err_file)


@pytest.fixture(scope="module")
def proxy_lab(tmp_path_factory: pytest.TempPathFactory, spendmeter_command: list[str]) -> Iterator[ProxyLab]:
    base = tmp_path_factory.mktemp("proxy-netns")
    ca_dir, receipts_dir = base / "ca", base / "receipts"
    for owned in (ca_dir, receipts_dir):  # the proxy writes here, as its own uid
        owned.mkdir()
        os.chown(owned, PROXY_UID, PROXY_UID)
    # Made first, so that the stand-in and the proxy (which trusts it upstream) can start together.
    standin_ca = CertificateAuthority.load_or_create(base / "standin")
    standin_ca_path = base / "standin" / "ca.pem"
    receipts, out, err = receipts_dir / "receipts.jsonl", base / "proxy.out", base / "proxy.err"
    addresses = {WS_HOST: SECOND_PROVIDER_IP, LLM_WS_HOST: SECOND_PROVIDER_IP}
    with NetnsLab((*PROVIDER_HOSTS, NON_LLM_HOST), addresses=addresses) as lab, ExitStack() as stack:
        lab.add_address(lab.provider, f"{SECOND_PROVIDER_IP}/32")
        init = [*spendmeter_command, "init", f"--proxy-uid={PROXY_UID}", f"--proxy-port={PROXY_PORT}"]
        lab.run(lab.pod, init, check=True)
        standin = start_standin(lab, base)
        stack.callback(stop, standin)
        proxy = start_proxy(lab, spendmeter_command, ca_dir, standin_ca_path, receipts, out, err)
        stack.callback(stop, proxy)
        stack.enter_context(start_echo_server(lab, base, standin_ca))
        assert standin.stdout is not None and standin.stderr is not None
        ready = standin.stdout.readline()
        assert ready.startswith("standin ready"), standin.stderr.read()
        wait_ready(lab, proxy, err)
        ws_trust = base / "ws-trust.pem"  # as if the echo server had a publicly trusted certificate
        ws_trust.write_bytes((ca_dir / "ca-bundle.pem").read_bytes() + standin_ca_path.read_bytes())
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "SSL_CERT_DIR"}
        env.update(API_KEYS)
        yield ProxyLab(lab, ca_dir, standin_ca_path, receipts, out, err, ws_trust, env=env)


@pytest.fixture(autouse=True)
def only_new_receipts(proxy_lab: ProxyLab) -> None:
    """Each test reads only the receipts of its own calls."""
    proxy_lab.consumed = len(proxy_lab.receipts())


def sample_usage(sample_id: str) -> dict[str, int]:
    """The five normalized counts the corpus prescribes for a recorded exchange."""
    sample = next(s for s in load_samples() if s.id == sample_id)
    usage = expected_usage(sample)
    assert usage is not None
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


COUNTS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")


def counts(receipt: Mapping[str, Any]) -> dict[str, int]:
    return {k: receipt[k] for k in COUNTS}


# --- 1. a chat completion ----------------------------------------------------------------------------


def test_chat_completion_gets_cost_headers_a_receipt_and_metrics(proxy_lab: ProxyLab) -> None:
    before = proxy_lab.metric("spendmeter_cost_usd_total", provider="openai", model="gpt-4o-2024-08-06")
    seen = proxy_lab.app("openai_chat", {"model": "gpt-4o", "prompt": prompt("What is 2+2?")})
    headers, usage = seen["headers"], seen["usage"]
    assert seen["status"] == 200
    assert headers["x-spendmeter-cost-status"] == "priced"
    assert headers["x-spendmeter-provider"] == "openai"
    assert headers["x-spendmeter-model"] == seen["model"] == "gpt-4o-2024-08-06"
    assert int(headers["x-spendmeter-input-tokens"]) == usage["prompt_tokens"]
    assert int(headers["x-spendmeter-output-tokens"]) == usage["completion_tokens"]
    assert headers["x-spendmeter-cached-input-tokens"] == "0"
    cost = Decimal(headers["x-spendmeter-cost-usd"])
    assert cost > 0
    [receipt] = proxy_lab.new_receipts(1)
    assert receipt["request_id"] == headers["x-spendmeter-request-id"]
    assert Decimal(receipt["cost_usd"]) == cost
    assert receipt["status"] == 200 and receipt["stream"] is False
    assert receipt["input_tokens"] == usage["prompt_tokens"]
    after = proxy_lab.metric("spendmeter_cost_usd_total", provider="openai", model="gpt-4o-2024-08-06")
    assert after - before == pytest.approx(float(cost))


# --- 2. streams ----------------------------------------------------------------------------------------


def test_stream_without_include_usage_reaches_the_app_unchanged_and_is_metered(proxy_lab: ProxyLab) -> None:
    args = {"model": "gpt-4o-2024-11-20", "prompt": prompt("Count to three."), "max_tokens": 6}
    seen = proxy_lab.app("openai_stream", args)
    direct = proxy_lab.app("openai_stream", args, direct=True)
    assert seen["chunks"] == direct["chunks"]
    assert all(chunk["usage"] is None for chunk in seen["chunks"])
    [receipt] = proxy_lab.new_receipts(1)
    # The usage the provider reports when asked: the proxy asked for it on the app's behalf.
    asked = proxy_lab.app("openai_stream", {**args, "include_usage": True}, direct=True)
    usage = asked["chunks"][-1]["usage"]
    assert receipt["stream"] is True
    assert receipt["input_tokens"] == usage["prompt_tokens"] > 0
    assert receipt["output_tokens"] == usage["completion_tokens"] > 0
    assert receipt["cost_status"] == "priced"


def test_stream_with_include_usage_gets_the_cost_in_the_usage_chunk(proxy_lab: ProxyLab) -> None:
    args = {"model": "gpt-4o-mini", "prompt": prompt("Which tool?"), "include_usage": True}
    seen = proxy_lab.app("openai_stream", args)
    last = seen["chunks"][-1]
    assert last["choices"] == [] and last["usage"] is not None
    annotation = last["x_spendmeter"]
    assert [c["x_spendmeter"] for c in seen["chunks"][:-1]] == [None] * (len(seen["chunks"]) - 1)
    [receipt] = proxy_lab.new_receipts(1)
    expected = sample_usage("openai__chat_stream_include_usage_tool_calls")
    assert counts(receipt) == expected
    assert last["usage"]["prompt_tokens"] == expected["input_tokens"]
    assert annotation["request_id"] == receipt["request_id"]
    assert annotation["model"] == receipt["model"] == "gpt-4o-mini-2024-07-18"
    assert annotation["provider"] == "openai" and annotation["cost_status"] == "priced"
    assert Decimal(annotation["cost_usd"]) == Decimal(receipt["cost_usd"]) > 0


def test_a_stream_the_sdk_closes_after_done_is_a_success(proxy_lab: ProxyLab) -> None:
    # The SDK stops reading at "data: [DONE]" and closes the response, whether or not the body's end
    # has arrived; here it arrives a pause later. The app has had the whole stream: a successful call.
    args = {"model": "gpt-4-turbo", "prompt": prompt("Quick."), "max_tokens": 3}
    seen = proxy_lab.app("openai_stream", args)
    direct = proxy_lab.app("openai_stream", args, direct=True)
    assert seen["chunks"] == direct["chunks"]
    assert seen["chunks"][-1]["choices"][0]["finish_reason"] == "length"
    [receipt] = proxy_lab.new_receipts(1)
    assert receipt["input_tokens"] > 0 and receipt["output_tokens"] == 3
    assert (receipt["status"], receipt["error"]) == (200, None)


# --- 3. streams are not buffered -------------------------------------------------------------------


def test_the_first_chunk_arrives_as_soon_as_without_the_proxy(proxy_lab: ProxyLab) -> None:
    args = {"model": TIMING_MODEL, "prompt": prompt("Tell a story."), "max_tokens": 4, "warm_up": True}
    direct = proxy_lab.app("openai_stream", args, direct=True)
    seen = proxy_lab.app("openai_stream", args)
    events = len(seen["chunks"])
    assert events >= 5
    assert seen["first_chunk_s"] < direct["first_chunk_s"] + 0.05
    # The stand-in pauses before every event after the first: the end comes (events - 1) pauses later.
    assert seen["end_s"] - seen["first_chunk_s"] >= (events - 1) * TIMING_PAUSE_S * 0.9
    assert seen["first_chunk_s"] < TIMING_PAUSE_S
    proxy_lab.new_receipts(2)  # the warm-up call and the stream


# --- 4. Anthropic ----------------------------------------------------------------------------------


def test_anthropic_message_with_cache_read_and_write(proxy_lab: ProxyLab) -> None:
    sample = "anthropic__messages_cache_write_and_read"
    args = {
        "model": "claude-sonnet-4-5",
        "prompt": prompt("Summarise."),
        "headers": {"x-standin-sample": sample},
    }
    seen = proxy_lab.app("anthropic_message", args)
    headers, expected = seen["headers"], sample_usage(sample)
    assert seen["status"] == 200
    assert headers["x-spendmeter-provider"] == "anthropic"
    assert headers["x-spendmeter-model"] == seen["model"]
    assert headers["x-spendmeter-cost-status"] == "priced"
    assert {k: int(headers[f"x-spendmeter-{k.replace('_', '-')}"]) for k in COUNTS} == expected
    [receipt] = proxy_lab.new_receipts(1)
    assert counts(receipt) == expected
    assert receipt["cost_usd"] == headers["x-spendmeter-cost-usd"]
    # Anthropic's input_tokens leave cached and cache-written tokens out; the normalized count has them.
    usage = seen["usage"]
    total = usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
    assert expected["input_tokens"] == total


def test_anthropic_stream_is_unchanged_and_metered(proxy_lab: ProxyLab) -> None:
    sample = "anthropic__stream_plain"
    args = {"model": "claude-sonnet-4-5", "prompt": prompt("Hi"), "headers": {"x-standin-sample": sample}}
    seen = proxy_lab.app("anthropic_stream", args)
    direct = proxy_lab.app("anthropic_stream", args, direct=True)
    assert seen == direct
    assert seen["events"][0] == "message_start" and seen["events"][-1] == "message_stop"
    [receipt] = proxy_lab.new_receipts(1)
    assert receipt["stream"] is True and receipt["provider"] == "anthropic"
    assert counts(receipt) == sample_usage(sample)
    assert receipt["cost_status"] == "priced"


# --- 5. other hosts keep their own certificate ----------------------------------------------------


def test_a_non_llm_host_keeps_its_original_certificate(proxy_lab: ProxyLab) -> None:
    lab = proxy_lab.lab

    def peer_certificate() -> bytes:
        context = ssl.create_default_context(cafile=str(proxy_lab.standin_ca))
        # This process's threads do not see the pod's /etc/hosts: the address it gives the name.
        with (
            socket.create_connection((lab.provider_ip, 443), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=NON_LLM_HOST) as conn,
        ):
            der = conn.getpeercert(binary_form=True)
            assert der is not None
            return der

    # A root process in the pod: iptables sends the connection to the proxy, which must not decrypt it.
    cert = x509.load_der_x509_certificate(in_netns(lab.pod, peer_certificate))
    standin_ca = x509.load_pem_x509_certificate(proxy_lab.standin_ca.read_bytes())
    proxy_ca = x509.load_pem_x509_certificate((proxy_lab.ca_dir / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(standin_ca)
    assert cert.issuer == standin_ca.subject
    with pytest.raises((ValueError, InvalidSignature)):
        cert.verify_directly_issued_by(proxy_ca)
    assert NON_LLM_HOST in str(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    proxy_lab.no_new_receipts()


# --- 6. faults and odd traffic ----------------------------------------------------------------------


def test_a_429_then_200_is_retried_by_the_sdk_and_counted_as_a_retry(proxy_lab: ProxyLab) -> None:
    before = proxy_lab.metric("spendmeter_retries_total", provider="openai", model="gpt-4.1-mini")
    seen = proxy_lab.app("openai_chat", {"model": "gpt-4.1-mini", "prompt": prompt("Retry me.")})
    assert seen["status"] == 200 and seen["retries"] == 1
    failed, answered = proxy_lab.new_receipts(2)
    assert failed["status"] == 429 and failed["retry"] is False
    assert answered["status"] == 200 and answered["retry"] is True
    assert answered["request_id"] == seen["headers"]["x-spendmeter-request-id"]
    after = proxy_lab.metric("spendmeter_retries_total", provider="openai", model="gpt-4.1-mini")
    assert after - before == 1


@pytest.mark.parametrize(("model", "status", "kind"), [("o1", 400, "4xx"), ("o1-pro", 503, "5xx")])
def test_error_bodies_reach_the_app_unchanged_and_are_counted_by_status(
    proxy_lab: ProxyLab, model: str, status: int, kind: str
) -> None:
    labels = {"provider": "openai", "model": model, "status": kind}
    before = proxy_lab.metric("spendmeter_requests_total", **labels)
    args = {"model": model, "prompt": prompt("Fail."), "max_retries": 0}
    seen = proxy_lab.app("openai_chat", args)
    direct = proxy_lab.app("openai_chat", args, direct=True)
    assert seen == direct
    assert seen["status"] == status and json.loads(seen["body"])["error"]["message"]
    [receipt] = proxy_lab.new_receipts(1)
    assert receipt["status"] == status and receipt["cost_usd"] is None
    assert proxy_lab.metric("spendmeter_requests_total", **labels) - before == 1


def test_malformed_json_in_a_200_reaches_the_app_as_it_is(proxy_lab: ProxyLab) -> None:
    args = {"model": "gpt-4o", "prompt": prompt("Break."), "headers": {"x-standin-sample": MALFORMED_SAMPLE}}
    seen = proxy_lab.app("openai_chat", {**args, "max_retries": 0})
    direct = proxy_lab.app("openai_chat", {**args, "max_retries": 0}, direct=True)
    assert seen == direct and "error" in seen
    [receipt] = proxy_lab.new_receipts(1)
    assert receipt["status"] == 200 and receipt["cost_status"] == "no-usage"
    assert receipt["error"]


def test_an_unknown_path_on_an_llm_host_passes_through_without_a_receipt(proxy_lab: ProxyLab) -> None:
    seen = proxy_lab.app("openai_models")
    direct = proxy_lab.app("openai_models", direct=True)
    assert seen == direct
    proxy_lab.no_new_receipts()


def test_a_truncated_stream_fails_as_without_the_proxy_and_keeps_its_usage(proxy_lab: ProxyLab) -> None:
    args = {"model": "gpt-4o-2024-05-13", "prompt": prompt("Cut me short."), "max_tokens": 5}
    seen = proxy_lab.app("openai_stream", args)
    direct = proxy_lab.app("openai_stream", args, direct=True)
    assert seen["error"] == direct["error"]
    [receipt] = proxy_lab.new_receipts(1)
    assert receipt["status"] is None and receipt["error"]
    assert receipt["input_tokens"] > 0 and receipt["output_tokens"] > 0  # the usage chunk came before the cut
    labels = {"provider": "openai", "model": "gpt-4o-2024-05-13", "status": "error"}
    assert proxy_lab.metric("spendmeter_requests_total", **labels) == 1  # no other test uses this model
    assert (
        proxy_lab.metric(
            "spendmeter_tokens_total", provider="openai", model="gpt-4o-2024-05-13", type="input"
        )
        == receipt["input_tokens"]
    )


def test_an_upstream_reset_mid_stream_fails_as_without_the_proxy(proxy_lab: ProxyLab) -> None:
    labels = {"provider": "openai", "model": "gpt-4o-mini-2024-07-18", "status": "error"}
    before = proxy_lab.metric("spendmeter_requests_total", **labels)
    args = {"model": "gpt-4o-mini-2024-07-18", "prompt": prompt("Reset."), "max_tokens": 30}
    seen = proxy_lab.app("openai_stream", args)
    direct = proxy_lab.app("openai_stream", args, direct=True)
    assert seen["error"] == direct["error"]
    [receipt] = proxy_lab.new_receipts(1)
    assert receipt["status"] is None and receipt["error"]
    assert proxy_lab.metric("spendmeter_requests_total", **labels) - before == 1


def test_an_app_hanging_up_mid_stream_leaves_the_proxy_working(proxy_lab: ProxyLab) -> None:
    args = {
        "model": "gpt-4.1",
        "prompt": prompt("Long story."),
        "stop_after": 1,
        "then_chat": prompt("Next?"),
    }
    seen = proxy_lab.app("openai_stream", args)
    assert len(seen["chunks"]) == 1
    assert seen["next"]["status"] == 200 and seen["next"]["headers"]["x-spendmeter-cost-status"] == "priced"
    receipts = proxy_lab.new_receipts(2)
    assert {r["stream"] for r in receipts} == {True, False}


def test_a_20_mb_request_body_gets_its_answer(proxy_lab: ProxyLab) -> None:
    size = 20 * 1024 * 1024
    seen = proxy_lab.app("big_chat", {"model": "gpt-4.1-mini", "size": size})
    assert seen["status"] == 200
    [receipt] = proxy_lab.new_receipts(1)
    assert receipt["request_id"] == seen["headers"]["x-spendmeter-request-id"]
    assert receipt["input_tokens"] == seen["usage"]["prompt_tokens"] >= size // 4


def test_non_utf8_bytes_pass_through_untouched(proxy_lab: ProxyLab) -> None:
    url = "https://api.openai.com/v1/chat/completions"
    request = b'{"model":"gpt-4o","messages":[{"role":"user","content":"caf\xe9 \xff\xfe"}]}'
    args = {"url": url, "body_hex": request.hex()}
    seen = proxy_lab.app("raw_post", args)
    direct = proxy_lab.app("raw_post", args, direct=True)
    assert (seen["status"], seen["body_hex"]) == (direct["status"], direct["body_hex"])
    answer = {
        **args,
        "body_hex": b'{"model":"gpt-4o","messages":[]}'.hex(),
        "headers": {"x-standin-sample": NON_UTF8_SAMPLE},
    }
    seen = proxy_lab.app("raw_post", answer)
    assert seen["status"] == 200 and bytes.fromhex(seen["body_hex"]) == NON_UTF8_BODY
    receipts = proxy_lab.new_receipts(2)
    assert [r["status"] for r in receipts] == [direct["status"], 200]


def test_http2_from_the_app_is_metered(proxy_lab: ProxyLab) -> None:
    body = json.dumps({"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": prompt("h2")}]})
    seen = proxy_lab.app(
        "raw_post",
        {"url": "https://api.openai.com/v1/chat/completions", "body_hex": body.encode().hex(), "http2": True},
    )
    assert seen["status"] == 200 and seen["http_version"] == "HTTP/2"
    assert seen["headers"]["x-spendmeter-cost-status"] == "priced"
    [receipt] = proxy_lab.new_receipts(1)
    assert receipt["request_id"] == seen["headers"]["x-spendmeter-request-id"]


@pytest.mark.parametrize(("host", "decrypted"), [(WS_HOST, False), (LLM_WS_HOST, True)])
def test_a_websocket_upgrade_passes_through(proxy_lab: ProxyLab, host: str, decrypted: bool) -> None:
    # The LLM host's connection is decrypted: the app then trusts the proxy's bundle alone. The other
    # host keeps its own certificate, which the app trusts as it would a public one.
    trust = None if decrypted else proxy_lab.ws_trust
    args = {"url": f"wss://{host}/v1/realtime", "messages": ["one", prompt("two")]}
    seen = proxy_lab.app("websocket_echo", args, trust=trust)
    assert seen["replies"] == ["echo: one", f"echo: {prompt('two')}"]
    proxy_lab.no_new_receipts()


# --- 7. waste ----------------------------------------------------------------------------------------


def test_a_duplicate_call_is_marked_and_its_cost_counted_as_waste(proxy_lab: ProxyLab) -> None:
    labels = {"provider": "openai", "model": "gpt-4o-2024-08-06", "reason": "duplicate"}
    before = proxy_lab.metric("spendmeter_wasted_cost_usd_total", **labels)
    seen = proxy_lab.app("openai_chat", {"model": "gpt-4o", "prompt": prompt("Same again."), "repeat": 2})
    first, second = proxy_lab.new_receipts(2)
    assert first["duplicate"] is False and second["duplicate"] is True
    assert second["request_id"] == seen["calls"][1]["headers"]["x-spendmeter-request-id"]
    wasted = proxy_lab.metric("spendmeter_wasted_cost_usd_total", **labels) - before
    assert wasted == pytest.approx(float(Decimal(second["cost_usd"])))
    assert wasted > 0


# --- 8. privacy ---------------------------------------------------------------------------------------


def test_no_prompt_and_no_api_key_leaves_the_proxy(proxy_lab: ProxyLab) -> None:
    proxy_lab.app("openai_chat", {"model": "gpt-4o", "prompt": prompt("A secret question.")})
    proxy_lab.app(
        "openai_stream", {"model": "gpt-4o-mini", "prompt": prompt("A secret stream."), "include_usage": True}
    )
    proxy_lab.new_receipts(2)
    outputs = {
        "receipts": proxy_lab.receipts_path.read_text(),
        "proxy stdout": proxy_lab.proxy_out.read_text(),
        "proxy stderr": proxy_lab.proxy_err.read_text(),
        "metrics": proxy_lab.metrics_text(),
    }
    assert len(proxy_lab.receipts()) >= 3
    for where, text in outputs.items():
        assert PROMPT_MARKER not in text, where
        for key in API_KEYS.values():
            assert key not in text, where
