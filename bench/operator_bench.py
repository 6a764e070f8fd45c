"""Benchmark of the operator: admission latency added per pod creation, and the operator's memory.

Builds (or reuses) the control plane, starts it on loopback with the operator, then creates 2 x N pods
through the real API server, alternately opted in (the API server calls the webhook) and not opted in (the
namespace is outside the webhook's selector, so it is not called). The difference of the two latency
distributions is what the webhook adds. Prints p50/p99 of both and the difference, and the operator's RSS after the run.
Targets: p99 added under 20 ms, RSS under 120 MiB.

    .venv/bin/python bench/operator_bench.py [--pods 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "operator"))
from conftest import build_control_plane, running_control_plane, start_operator, wait_for


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def create_pod(core: object, namespace: str, name: str, inject: bool) -> float:
    """Milliseconds the API server took to create the pod."""
    annotations = {"spendmeter.io/inject": "true"} if inject else {}
    pod = {"metadata": {"name": name, "annotations": annotations},
           "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}  # fmt: skip
    start = time.perf_counter()
    core.create_namespaced_pod(namespace, pod)  # type: ignore[attr-defined]
    return (time.perf_counter() - start) * 1000


def create_pods(core: object, count: int, prefix: str = "bench") -> tuple[list[float], list[float]]:
    """Creation times without and with the webhook, the two kinds alternating so that both meet the same
    load on the machine."""
    base, hooked = [], []
    for i in range(count):
        base.append(create_pod(core, "spendmeter-system", f"{prefix}-{i}", inject=False))
        hooked.append(create_pod(core, "bench-injected", f"{prefix}-{i}", inject=True))
    return base, hooked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=200)
    args = parser.parse_args()
    bin_dir = build_control_plane()
    with (
        tempfile.TemporaryDirectory(prefix="spendmeter-bench-") as tmp,
        running_control_plane(bin_dir, Path(tmp)) as cp,
    ):
        op = start_operator(cp, "operator-bench", "--standalone")
        try:
            core = kubernetes.client.CoreV1Api(cp.client())
            for ns in ("bench-injected", "spendmeter-system"):  # the operator's namespace is never sent
                core.create_namespace({"metadata": {"name": ns}})
                wait_for(
                    lambda ns=ns: core.read_namespaced_service_account("default", ns), 60, "service account"
                )
            create_pods(core, 10, prefix="warm-up")  # not counted
            time.sleep(2)
            base, hooked = create_pods(core, args.pods)
            injected = core.read_namespaced_pod("bench-0", "bench-injected").metadata.annotations
            assert injected.get("spendmeter.io/status") == "injected", "the webhook did not inject"
            rss = rss_mib(op.proc.pid)
        finally:
            op.stop()
    for label, values in (("without webhook", base), ("with webhook", hooked)):
        print(f"{label:16} p50 {percentile(values, 50):7.2f} ms   p99 {percentile(values, 99):7.2f} ms")
    print(f"{'added':16} p50 {percentile(hooked, 50) - percentile(base, 50):7.2f} ms   "
          f"p99 {percentile(hooked, 99) - percentile(base, 99):7.2f} ms   (target: p99 < 20 ms)")  # fmt: skip
    print(f"operator RSS {rss:.1f} MiB (target: < 120 MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
