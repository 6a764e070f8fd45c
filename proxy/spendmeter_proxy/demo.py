"""``spendmeter demo``: the whole metering path on one machine, with no cluster, no root and no account.

It starts the provider stand-in (a local TLS server answering like OpenAI and Anthropic), runs the real
``spendmeter proxy`` in explicit mode in front of it (``--connect-to`` sends the providers' real names to the
stand-in), and lets the official ``openai`` and ``anthropic`` SDKs make a handful of calls through it, with
their default base URLs and no code change: only ``HTTPS_PROXY`` and ``SSL_CERT_FILE`` are set, as the
operator does for a pod in explicit mode. It then prints a receipt per call and the totals read back from
``/metrics``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from spendmeter_proxy.standin import Reply, Rule, StandIn

PROVIDER_HOSTS = ("api.openai.com", "api.anthropic.com")
EXPECTED_CALLS = 8  # what the scenarios below send, the SDK's retry included
LONG_SYSTEM_PROMPT = "You are the support assistant of a bicycle shop. " + " ".join(
    f"Policy {i}: answer politely and mention the warranty terms of section {i}." for i in range(220)
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (CA, receipts)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except OSError:
        return 0, ""


@contextmanager
def running_proxy(work: Path, standin: StandIn) -> Iterator[tuple[int, int]]:
    port, metrics_port = free_port(), free_port()
    target = f"127.0.0.1:{standin.port}"
    argv = [
        sys.executable, "-m", "spendmeter_proxy", "proxy", "--mode", "explicit",
        "--listen-host", "127.0.0.1", "--listen-port", str(port),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
        "--ca-dir", str(work / "ca"), "--upstream-ca", str(standin.ca_path),
        "--receipts", str(work / "receipts.jsonl"), "--log-level", os.environ.get("SPENDMETER_DEMO_LOG_LEVEL", "warning"),
        *[arg for host in PROVIDER_HOSTS for arg in ("--connect-to", f"{host}:443={target}")],
    ]  # fmt: skip
    env = {**os.environ, "SPENDMETER_WORKLOAD": "demo-app", "SPENDMETER_WORKLOAD_KIND": "Deployment",
           "SPENDMETER_NAMESPACE": "demo", "SPENDMETER_POD": "demo-app-0"}  # fmt: skip
    proc = subprocess.Popen(argv, env=env)
    try:
        deadline = time.monotonic() + 30
        while get(f"http://127.0.0.1:{metrics_port}/readyz")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the proxy did not become ready")
            time.sleep(0.05)
        yield port, metrics_port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scenarios() -> list[tuple[str, Callable[[Any, Any], object]]]:
    question = [{"role": "user", "content": "What is the capital of France?"}]

    def plain(oa: Any, _: Any) -> object:
        r = oa.chat.completions.with_raw_response.create(model="gpt-4o", messages=question)
        return {k: v for k, v in r.headers.items() if k.startswith("x-spendmeter-")}

    def streamed(oa: Any, _: Any) -> object:
        chunks = list(oa.chat.completions.create(model="gpt-4.1-mini", messages=question, stream=True))
        return f"{len(chunks)} chunks, none with usage: the client did not ask for it"

    def cached(_: Any, an: Any) -> object:
        system = [{"type": "text", "text": LONG_SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}]
        for question in (
            "Do you fix brakes?",
            "Do you sell helmets?",
        ):  # writes the prompt cache, then reads it
            msgs = [{"role": "user", "content": question}]
            r = an.messages.create(model="claude-sonnet-4-5", max_tokens=200, system=system, messages=msgs)
        return r.usage.model_dump(include={"cache_read_input_tokens", "cache_creation_input_tokens"})

    def duplicate(oa: Any, _: Any) -> object:
        return oa.chat.completions.create(model="gpt-4o", messages=question).usage.total_tokens

    def retry(oa: Any, _: Any) -> object:
        return oa.chat.completions.create(model="gpt-4o-mini", messages=question).model

    def unknown(oa: Any, _: Any) -> object:
        r = oa.chat.completions.with_raw_response.create(model="acme-support-ft-v3", messages=question)
        return {"x-spendmeter-cost-status": r.headers.get("x-spendmeter-cost-status")}

    return [
        ("plain chat call (gpt-4o)", plain),
        ("streamed chat call (gpt-4.1-mini)", streamed),
        ("Anthropic prompt cache: write, then read", cached),
        ("the plain call again: a duplicate", duplicate),
        ("429 rate limit, then the SDK's retry (gpt-4o-mini)", retry),
        ("a model with no known price", unknown),
    ]


@contextmanager
def app_environment(proxy_port: int, ca_dir: Path) -> Iterator[None]:
    """The environment an app in explicit mode gets from the injection (and dummy keys), for the block."""
    wanted = {
        "HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}",
        "SSL_CERT_FILE": str(ca_dir / "ca-bundle.pem"),
        "OPENAI_API_KEY": "sk-demo-not-a-real-key",
        "ANTHROPIC_API_KEY": "sk-ant-demo-not-a-real-key",
    }
    cleared = ("NO_PROXY", "no_proxy", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")
    saved = {name: os.environ.get(name) for name in (*wanted, *cleared)}
    os.environ.update(wanted)
    for name in cleared:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def sdk_clients(proxy_port: int, ca_dir: Path) -> tuple[Any, Any]:
    """The official SDK clients, configured only by the environment (they read it when they are made)."""
    import anthropic
    import openai

    with app_environment(proxy_port, ca_dir):
        return openai.OpenAI(max_retries=2), anthropic.Anthropic()


def read_receipts(path: Path, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


def print_receipts(receipts: list[dict[str, Any]]) -> None:
    cols = ("provider", "model", "status", "in", "cached", "cache_wr", "out", "cost_usd", "flags")
    rows = []
    for r in receipts:
        flags = [f for f in ("duplicate", "retry", "stream") if r[f]]
        if r["cost_status"] != "priced":
            flags.append(r["cost_status"])
        if r["wasted_cost_usd"]:
            flags.append(f"wasted ${r['wasted_cost_usd']}")
        rows.append((r["provider"], r["model"], str(r["status"]), str(r["input_tokens"]),
                     str(r["cached_input_tokens"]), str(r["cache_write_tokens"]), str(r["output_tokens"]),
                     r["cost_usd"] or "-", ", ".join(flags)))  # fmt: skip
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    for row in (cols, *rows):
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def metric_totals(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_total"):
                key = s.name
                if "type" in s.labels:
                    key += f"{{type={s.labels['type']}}}"
                elif "reason" in s.labels:
                    key += f"{{reason={s.labels['reason']}}}"
                elif "status" in s.labels:
                    key += f"{{status={s.labels['status']}}}"
                totals[key] = totals.get(key, 0.0) + s.value
    return totals


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="spendmeter-demo-"))
    retry_rule = Rule([Reply.error(429, "Rate limit reached for gpt-4o-mini", retry_after=0), Reply()],
                      model="gpt-4o-mini")  # fmt: skip
    with StandIn(tls_dir=work / "provider-tls", rules=[retry_rule]) as standin:
        print(f"provider stand-in for {', '.join(PROVIDER_HOSTS)} on 127.0.0.1:{standin.port}")
        with running_proxy(work, standin) as (proxy_port, metrics_port):
            print(f"spendmeter proxy (explicit mode) on 127.0.0.1:{proxy_port}, metrics on :{metrics_port}\n")
            oa, an = sdk_clients(proxy_port, work / "ca")
            for title, scenario in scenarios():
                print(f"- {title}: {scenario(oa, an)}")
            receipts = read_receipts(work / "receipts.jsonl", EXPECTED_CALLS)
            print(f"\nreceipts ({len(receipts)} calls, from {work / 'receipts.jsonl'}):")
            print_receipts(receipts)
            status, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
            totals = metric_totals(text)
    print("\ntotals read back from /metrics:")
    for key in sorted(totals):
        if key.startswith(("spendmeter_cost", "spendmeter_wasted", "spendmeter_tokens", "spendmeter_retries",
                           "spendmeter_unpriced", "spendmeter_requests")):  # fmt: skip
            value = totals[key]
            print(f"  {key:58} {value:.8f}" if "usd" in key else f"  {key:58} {value:g}")
    receipt_sum = sum(float(r["cost_usd"]) for r in receipts if r["cost_usd"])
    print(
        f"\nsum of receipt costs ${receipt_sum:.8f}; spendmeter_cost_usd_total ${totals.get('spendmeter_cost_usd_total', 0):.8f}"
    )
    print(f"demo finished in {time.monotonic() - started:.1f} s")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    ok = (
        status == 200
        and len(receipts) == EXPECTED_CALLS
        and abs(receipt_sum - totals.get("spendmeter_cost_usd_total", 0)) < 1e-9
    )
    return 0 if ok else 1
