"""Starting and stopping the benchmark's servers: the stand-in, bare mitmdump, spendmeter and LiteLLM.

Each server is a child process in its own session (so a Ctrl-C reaches the benchmark first, and stopping a
server ends exactly its process group), with its output in a log file so that printing costs it nothing.
`Servers` stops every server it started when it is closed, whatever ended the run. Every server listens on
127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import yaml

LOOPBACK = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
MITMDUMP = ROOT / ".venv" / "bin" / "mitmdump"
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
LITELLM_REQUIREMENTS = BENCH_DIR / "requirements-litellm.txt"
LITELLM_PYTHONS = ("3.12", "3.13")  # the pins were made on 3.12
MODEL = "gpt-4o-mini"
# The proxy options spendmeter sets on mitmproxy (see spendmeter_proxy/running.py), given to bare mitmdump.
MITM_OPTIONS = ("connection_strategy=lazy", "stream_large_bodies=64m")


class LaunchError(RuntimeError):
    """A server did not start; the message says which and where its log is."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def http_ok(url: str) -> bool:
    """Whether ``url`` (on loopback) answers 200, ignoring any proxy settings of the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Server:
    """A started child process and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_for(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not self.alive():
                raise LaunchError(
                    f"{self.name} exited with {self.process.returncode} before {what}; "
                    f"log {self.log}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise LaunchError(f"{self.name}: no {what} within {timeout_s:.0f} s; log {self.log}")
            time.sleep(0.05)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``grace_s``."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _no_proxy_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: no inherited proxy settings, loopback never proxied."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


class Servers:
    """Starts servers and stops all of them on close (also on errors and Ctrl-C)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Server] = []

    def __enter__(self) -> Servers:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        while self.started:
            self.started.pop().stop()

    def spawn(self, name: str, argv: Sequence[str | Path], env: dict[str, str] | None = None) -> Server:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_no_proxy_env(env),
                cwd=self.workdir,
                start_new_session=True,
            )
        server = Server(name, process, log)
        self.started.append(server)
        return server

    def standin(self, first_event_pause_ms: float, chunk_delay_ms: float) -> tuple[Server, str]:
        """The plain-HTTP provider stand-in; streams wait ``first_event_pause_ms`` before answering."""
        rules = self.workdir / "standin-rules.yaml"
        rule = {
            "stream": True,
            "repeat_last": True,
            "replies": [{"fault": {"first_byte_delay_ms": first_event_pause_ms}}],
        }
        rules.write_text(yaml.safe_dump([rule]))
        server = self.spawn(
            "standin",
            [
                PROJECT_PYTHON,
                "-m",
                "spendmeter_proxy.standin",
                "--listen",
                f"{LOOPBACK}:0",
                "--chunk-delay-ms",
                str(chunk_delay_ms),
                "--rules",
                rules,
            ],
        )
        found: list[str] = []

        def ready() -> bool:
            m = re.search(r"^standin ready (\S+)", server.log.read_text(errors="replace"), re.M)
            if m:
                found.append(m.group(1))
            return bool(m)

        server.wait_for(ready, 30, "ready line")
        return server, found[0]

    def mitmdump(self) -> tuple[Server, int]:
        port = free_port()
        confdir = self.workdir / "mitmdump-conf"
        confdir.mkdir(exist_ok=True)
        sets = [a for opt in (f"confdir={confdir}", *MITM_OPTIONS) for a in ("--set", opt)]
        server = self.spawn("mitmdump", [MITMDUMP, "-q", "--mode", f"regular@{LOOPBACK}:{port}", *sets])
        server.wait_for(lambda: _listening(port), 30, "listening port")
        return server, port

    def spendmeter(self, upstream_port: int, profile: bool = False) -> tuple[Server, int, int]:
        """The spendmeter proxy in explicit mode, metering the stand-in as OpenAI; (server, port, metrics)."""
        port, metrics = free_port(), free_port()
        argv: list[str | Path] = [PROJECT_PYTHON]
        if profile:
            argv += ["-m", "cProfile", "-o", self.workdir / "spendmeter.prof"]
            argv += ["-m", "spendmeter_proxy"]
        else:
            argv += ["-m", "spendmeter_proxy"]
        argv += [
            "proxy",
            "--mode",
            "explicit",
            "--listen-host",
            LOOPBACK,
            "--listen-port",
            str(port),
            "--metrics-host",
            LOOPBACK,
            "--metrics-port",
            str(metrics),
            "--ca-dir",
            self.workdir / "spendmeter-ca",
            "--llm-host",
            f"{LOOPBACK}:{upstream_port}=openai",
            "--receipts",
            self.workdir / "receipts.jsonl",
            "--log-level",
            "warning",
        ]
        server = self.spawn("spendmeter", argv)
        server.wait_for(lambda: http_ok(f"http://{LOOPBACK}:{metrics}/readyz"), 60, "/readyz 200")
        return server, port, metrics

    def litellm(self, upstream_url: str, python: Path) -> tuple[Server, int]:
        """LiteLLM's proxy with one model routed to the stand-in, no database, cost tracking as shipped."""
        port = free_port()
        config = self.workdir / "litellm-config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "model_list": [
                        {
                            "model_name": MODEL,
                            "litellm_params": {
                                "model": f"openai/{MODEL}",
                                "api_base": f"{upstream_url}/v1",
                                "api_key": "unused",
                            },
                        }
                    ],
                    "litellm_settings": {"telemetry": False},
                }
            )
        )
        litellm = python.parent / "litellm"
        env = {
            # Use the price table shipped in the package instead of fetching one.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "DISABLE_ADMIN_UI": "True",
        }
        server = self.spawn(
            "litellm",
            [litellm, "--config", config, "--host", LOOPBACK, "--port", str(port), "--num_workers", "1"],
            env,
        )
        server.wait_for(
            lambda: http_ok(f"http://{LOOPBACK}:{port}/health/liveliness"), 300, "health endpoint 200"
        )
        return server, port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def find_python(versions: Sequence[str] = LITELLM_PYTHONS) -> Path | None:
    """A Python of one of ``versions``, earlier ones first: this interpreter's base, else one from pyenv."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for version in versions:
        if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
            return Path(sys.executable)
        for candidate in sorted(pyenv.glob(f"{version}.*/bin/python3"), reverse=True):
            if candidate.is_file():
                return candidate
    return None


def ensure_litellm_venv(log: Callable[[str], None]) -> Path:
    """LiteLLM's own virtualenv (created from the pinned requirements when missing); its python."""
    python = LITELLM_VENV / "bin" / "python"
    stamp = LITELLM_VENV / ".installed"
    if python.exists() and stamp.exists() and stamp.stat().st_mtime >= LITELLM_REQUIREMENTS.stat().st_mtime:
        return python
    base = find_python()
    if base is None:
        raise LaunchError(f"LiteLLM needs Python {' or '.join(LITELLM_PYTHONS)}; none found")
    log(f"installing LiteLLM into {LITELLM_VENV} with {base} (takes a few minutes) ...")
    steps = [
        [str(base), "-m", "venv", "--clear", str(LITELLM_VENV)],
        [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", "-q", "-r", str(LITELLM_REQUIREMENTS)],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LaunchError(f"{' '.join(step[:4])} ... failed:\n{done.stderr.strip()[-2000:]}")
    stamp.touch()
    return python
