"""``make bench``: what the spendmeter proxy costs a call, next to bare mitmdump and LiteLLM's proxy.

One run, on this machine, against one local provider stand-in, everything on 127.0.0.1, in four setups:
``direct`` (client to stand-in), ``mitmdump`` (bare, as an HTTP proxy, with spendmeter's mitmproxy
options), ``spendmeter`` (explicit proxy metering the stand-in as OpenAI) and ``litellm`` (LiteLLM's
gateway routing one model to the stand-in). It prints Markdown tables and writes the raw numbers to
``bench/results/``. The targets are reported, never enforced: the exit status only says whether the run
itself worked. See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
import types
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from launching import BENCH_DIR, LaunchError, Server, Servers, ensure_litellm_venv, rss_bytes
from loading import Target, call, concurrent, first_chunk, sequential
from summaries import (
    Goal,
    Latency,
    Memory,
    SetupResult,
    as_json,
    parse_requests_total,
    table,
    targets,
    targets_table,
)

RESULTS = BENCH_DIR / "results"


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to make."""

    requests: int
    warmup: int
    clients: int
    throughput_s: float
    streams: int
    stream_warmup: int
    soak_requests: int
    max_tokens: int = 16
    stream_max_tokens: int = 8
    first_event_pause_ms: float = 20.0
    chunk_delay_ms: float = 1.0


def parse_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    requests = args.requests if args.requests is not None else (200 if quick else 2000)
    soak = args.soak_requests if args.soak_requests is not None else (2000 if quick else 100_000)
    if requests <= 0 or soak < 0:
        raise ValueError("--requests must be positive and --soak-requests not negative")
    return Plan(
        requests=requests,
        warmup=20 if quick else 200,
        clients=4,
        throughput_s=2.0 if quick else 10.0,
        streams=20 if quick else 200,
        stream_warmup=5 if quick else 20,
        soak_requests=soak,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--skip-litellm", action="store_true", help="leave LiteLLM's proxy out")
    parser.add_argument("--requests", type=int, help="timed sequential calls per setup (default 2000)")
    parser.add_argument(
        "--soak-requests",
        type=int,
        help="calls through spendmeter between the two memory readings (default 100000)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the spendmeter proxy under cProfile; the profile lands in the run's directory",
    )


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def measure(target: Target, plan: Plan) -> SetupResult:
    """Latency, throughput and first-chunk time of one setup."""
    result = SetupResult(target.name)
    say(f"{target.name}: {plan.requests} sequential calls after {plan.warmup} warm-up")
    tally = asyncio.run(sequential(target, call, plan.requests, plan.warmup, plan.max_tokens))
    result.errors += tally.errors
    if tally.timings:
        result.latency = Latency.of(tally.timings)
    say(f"{target.name}: {plan.clients} clients for {plan.throughput_s:g} s")
    ok, failed, took = asyncio.run(
        concurrent(target, plan.clients, plan.max_tokens, duration_s=plan.throughput_s)
    )
    result.errors += failed
    result.requests_per_s = ok / took
    say(f"{target.name}: {plan.streams} streams")
    streams = asyncio.run(
        sequential(target, first_chunk, plan.streams, plan.stream_warmup, plan.stream_max_tokens)
    )
    result.errors += streams.errors
    if streams.timings:
        result.first_chunk = Latency.of(streams.timings)
    if result.errors:
        result.notes.append(f"{result.errors} calls failed")
    return result


def soak(server: Server, target: Target, plan: Plan, idle: int) -> Memory:
    """The proxy's resident memory before and after ``plan.soak_requests`` calls."""
    time.sleep(1)
    before = rss_bytes(server.pid)
    say(f"spendmeter: {plan.soak_requests:,} calls with {plan.clients} clients (memory soak)")
    ok, failed, took = asyncio.run(
        concurrent(target, plan.clients, plan.max_tokens, total=plan.soak_requests)
    )
    say(f"spendmeter: soak done in {took:.0f} s ({ok / took:.0f} calls/s, {failed} failed)")
    time.sleep(1)
    return Memory(idle=idle, before_soak=before, after_soak=rss_bytes(server.pid), soak_requests=ok + failed)


def scrape(metrics_port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, object]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mitmproxy": _version("mitmproxy"),
        "httpx": _version("httpx"),
        "spendmeter": _version("spendmeter"),
    }


def litellm_version(python: Path) -> str:
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def run(args: argparse.Namespace) -> int:
    plan = parse_plan(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    facts = machine()
    say(f"run {stamp}: {facts['cores']} cores, {facts['cpu']}; logs in {workdir}")
    results: dict[str, SetupResult] = {}
    memory: Memory | None = None
    extra: dict[str, object] = {}
    with Servers(workdir) as servers:
        standin, upstream = servers.standin(plan.first_event_pause_ms, plan.chunk_delay_ms)
        chat = f"{upstream}/v1/chat/completions"
        results["direct"] = measure(Target("direct", chat), plan)

        mitm, mitm_port = servers.mitmdump()
        results["mitmdump"] = measure(Target("mitmdump", chat, f"http://127.0.0.1:{mitm_port}"), plan)
        mitm.stop()

        port = int(upstream.rsplit(":", 1)[1])
        meter, meter_port, metrics_port = servers.spendmeter(port, profile=args.profile)
        time.sleep(1)
        idle = rss_bytes(meter.pid)
        target = Target("spendmeter", chat, f"http://127.0.0.1:{meter_port}")
        results["spendmeter"] = measure(target, plan)
        if plan.soak_requests:
            memory = soak(meter, target, plan, idle)
        extra["spendmeter_metered_calls"] = parse_requests_total(scrape(metrics_port))
        meter.stop()
        extra["spendmeter_receipts"] = sum(1 for _ in (workdir / "receipts.jsonl").open())

        if args.skip_litellm:
            say("litellm: skipped (--skip-litellm)")
        else:
            try:
                python = ensure_litellm_venv(say)
                facts["litellm"] = litellm_version(python)
                say("litellm: starting (waits for its health endpoint)")
                gateway, gateway_port = servers.litellm(upstream, python)
                url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
                results["litellm"] = measure(Target("litellm", url), plan)
                gateway.stop()
            except LaunchError as e:
                extra["litellm_unavailable"] = str(e)
                say(f"LiteLLM could not be installed or started, reporting the other setups: {e}")
        standin.stop()

    found = targets(results, memory)
    report = {
        "time": stamp,
        "machine": facts,
        "plan": as_json(plan),
        "results": as_json(results),
        "memory": memory.report() if memory else None,
        "targets": as_json(found),
        **extra,
    }
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(render(facts, plan, results, memory, found, extra))
    say(f"raw numbers in {out}")
    return 0


def render(
    facts: dict[str, object],
    plan: Plan,
    results: dict[str, SetupResult],
    memory: Memory | None,
    found: list[Goal],
    extra: dict[str, object],
) -> str:
    lines = [
        f"## spendmeter benchmark ({facts['cores']} cores, {facts['cpu']})",
        "",
        f"Python {facts['python']}, mitmproxy {facts['mitmproxy']}, httpx {facts['httpx']}"
        + (f", LiteLLM {facts['litellm']}" if "litellm" in facts else "")
        + f". {plan.requests} sequential calls after {plan.warmup} warm-up; {plan.clients} clients for"
        f" {plan.throughput_s:g} s; {plan.streams} streams with a {plan.first_event_pause_ms:g} ms pause"
        " before the first event. Added = setup minus direct.",
        "",
        table(results),
        "",
    ]
    if memory is not None:
        mib = 1024 * 1024
        lines.append(
            f"spendmeter RSS: {memory.idle / mib:.1f} MiB idle after start, {memory.before_soak / mib:.1f} MiB"
            f" before and {memory.after_soak / mib:.1f} MiB after {memory.soak_requests:,} calls"
            f" ({memory.growth * 100:+.2f}%; {memory.growth_since_start * 100:+.2f}% since start)."
        )
    if "spendmeter_metered_calls" in extra:
        lines.append(
            f"spendmeter metered {extra['spendmeter_metered_calls']:,} calls"
            f" and wrote {extra['spendmeter_receipts']:,} receipts."
        )
    if "litellm_unavailable" in extra:
        lines.append(f"LiteLLM: not measured ({str(extra['litellm_unavailable']).splitlines()[0]}).")
    lines += ["", targets_table(found)]
    return "\n".join(lines)


def _interrupt(signum: int, frame: types.FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the servers on SIGTERM as on Ctrl-C
    try:
        return run(args)
    except ValueError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    except LaunchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
