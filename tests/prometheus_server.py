"""A real Prometheus server (Debian's ``prometheus``) on loopback, for tests that query or scrape.

`PrometheusServer` starts ``/usr/bin/prometheus`` with a given configuration and storage folder on a free
port, waits until it is ready, and stops it. Tests that need it skip with the reason where it is missing,
unless ``SPENDMETER_REQUIRE_PROMETHEUS=1`` (CI) turns that into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import yaml

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
MISSING = (
    None
    if os.access(PROMETHEUS, os.X_OK) and os.access(PROMTOOL, os.X_OK)
    else ("Prometheus is not installed (apt-get install prometheus; scripts/setup.sh does it as root)")
)
requires_prometheus = pytest.mark.skipif(
    MISSING is not None and os.environ.get("SPENDMETER_REQUIRE_PROMETHEUS") != "1",
    reason=f"{MISSING} (set SPENDMETER_REQUIRE_PROMETHEUS=1 to fail instead)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrometheusServer:
    """Prometheus on 127.0.0.1 with ``config`` (a prometheus.yml as a dict) and data in ``storage``."""

    def __init__(self, config: dict[str, Any], storage: Path) -> None:
        self.config, self.storage = config, storage
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        if MISSING:
            raise RuntimeError(MISSING)
        self.storage.mkdir(parents=True, exist_ok=True)
        config_file = self.storage.parent / f"prometheus-{self.port}.yml"
        config_file.write_text(yaml.safe_dump(self.config))
        self.log = (self.storage.parent / f"prometheus-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config_file}", f"--storage.tsdb.path={self.storage}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=3650d"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"prometheus did not become ready: {self.log_text()}")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def log_text(self) -> str:
        return (self.storage.parent / f"prometheus-{self.port}.log").read_text(errors="replace")[-2000:]

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result


def backfill(openmetrics: str, storage: Path) -> None:
    """Writes OpenMetrics samples (with timestamps) into a TSDB folder with ``promtool``."""
    source = storage.parent / "backfill.om"
    source.write_text(openmetrics)
    storage.mkdir(parents=True, exist_ok=True)
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(storage)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
