"""A real Prometheus server (Debian's ``prometheus``) on loopback, for every test that queries or scrapes.

`PrometheusServer` starts ``/usr/bin/prometheus`` with a configuration (scrape jobs or none) and a storage
folder on a free port, waits until it is ready, and stops it; `scrape` changes its jobs on the fly
(SIGHUP). `backfill` writes known samples into a storage folder with ``promtool``. Tests that need it skip
with the reason where it is missing, unless ``SPENDMETER_REQUIRE_PROMETHEUS=1`` (CI) turns that into a
failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
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
REQUIRED = os.environ.get("SPENDMETER_REQUIRE_PROMETHEUS") == "1"
requires_prometheus = pytest.mark.skipif(
    MISSING is not None and not REQUIRED,
    reason=f"{MISSING} (set SPENDMETER_REQUIRE_PROMETHEUS=1 to fail instead)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until[T](check: Callable[[], T], timeout: float, what: str) -> T:
    """``check()``'s first truthy result within ``timeout`` seconds (connection errors count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None  # type: ignore[assignment]
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def config(jobs: list[dict[str, Any]], interval: str = "1s") -> dict[str, Any]:
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval}, "scrape_configs": jobs}


class PrometheusServer:
    """Prometheus on 127.0.0.1 with ``jobs`` (``scrape_configs`` entries) and data in ``work``/tsdb."""

    def __init__(self, work: Path, jobs: list[dict[str, Any]] | None = None, interval: str = "1s") -> None:
        self.work, self.interval = work, interval
        self.storage = work / "tsdb"
        self.config_file, self.log_file = work / "prometheus.yml", work / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        work.mkdir(parents=True, exist_ok=True)
        self._write(jobs or [])

    def _write(self, jobs: list[dict[str, Any]]) -> None:
        self.config_file.write_text(yaml.safe_dump(config(jobs, self.interval)))

    def __enter__(self) -> PrometheusServer:
        if MISSING:
            if REQUIRED:
                pytest.fail(MISSING)
            pytest.skip(MISSING)
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.config_file}", f"--storage.tsdb.path={self.storage}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=3650d"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log_text()}")
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)

        wait_until(ready, 60, "Prometheus to be ready")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")[-3000:]

    def scrape(self, jobs: list[dict[str, Any]]) -> None:
        """Scrape these jobs from now on (the configuration is reloaded in place)."""
        self._write(jobs)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def get(self, path: str, **params: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}?{urllib.parse.urlencode(params)}", timeout=10) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", f"{promql} gave a {data['resultType']}"
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, selector: str) -> list[str]:
        values: list[str] = self.get(f"/api/v1/label/{label}/values", **{"match[]": selector})
        return values


def backfill(openmetrics: str, storage: Path) -> None:
    """Writes OpenMetrics samples (with timestamps) into a TSDB folder with ``promtool``."""
    source = storage.parent / "backfill.om"
    source.write_text(openmetrics)
    storage.mkdir(parents=True, exist_ok=True)
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(storage)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
