"""A pod and an LLM provider on one machine: two network namespaces joined by a veth pair.

End-to-end tests run the real programs (``spendmeter init``, the proxy, the SDKs, a provider stand-in)
in these namespaces, so real iptables rules and real sockets are exercised without a cluster and without
touching the machine's own network. ``NetnsLab`` makes a "pod" namespace (``smpod-...``) and a "provider"
namespace (``smprov-...``), each with an ``eth0`` holding a private IPv4 address and an IPv6 ULA, default
routes via the peer, and an ``/etc/netns/<pod>/hosts`` that maps the providers' real names
(``api.openai.com``, ...) to the provider namespace, so programs started with ``ip netns exec`` reach
the stand-in under the real name. Everything is removed on exit, and namespaces left by earlier runs
whose process is gone are removed on entry.

Tests marked ``requires_netns`` skip, with the reason, where this is impossible (not root, no
``ip netns``, no iptables); with ``SPENDMETER_REQUIRE_NETNS=1`` they run and fail instead.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

POD_PREFIX = "smpod-"
PROVIDER_PREFIX = "smprov-"
NETNS_DIR = Path("/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")
SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
SUBNET6_PREFIX = "fd00:5d3e"
STALE_AFTER_SECONDS = 3600.0  # namespaces with a name we cannot read the owner from
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"
TOOLS = ("ip", "iptables", "iptables-restore", "iptables-save", "ip6tables", "ip6tables-restore", "setpriv")

PROVIDER_HOSTS: tuple[str, ...] = (
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "api.mistral.ai",
    "api.cohere.com",
    "api.groq.com",
    "api.deepseek.com",
    "api.x.ai",
    "openrouter.ai",
)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable_reason() -> str | None:
    """Why network-namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (ip netns, iptables)"
    env_path = os.pathsep.join((os.environ.get("PATH", ""), SBIN_PATH))
    missing = [tool for tool in TOOLS if shutil.which(tool, path=env_path) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    probe = f"smprobe-{os.getpid()}-{secrets.token_hex(2)}"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"'ip netns add' is not permitted here: {done.stderr.strip()}"
    try:
        saved = subprocess.run(
            ["ip", "netns", "exec", probe, "iptables-save", "-t", "nat"], capture_output=True, text=True
        )
        if saved.returncode != 0:
            return f"iptables does not work in a network namespace: {saved.stderr.strip()}"
    finally:
        _ip("netns", "delete", probe, check=False)
    return None


REQUIRED = os.environ.get("SPENDMETER_REQUIRE_NETNS") == "1"
UNAVAILABLE = unavailable_reason()
requires_netns = pytest.mark.skipif(
    UNAVAILABLE is not None and not REQUIRED,
    reason=f"network namespaces unavailable: {UNAVAILABLE} (set SPENDMETER_REQUIRE_NETNS=1 to fail instead)",
)


def _owner_gone(name: str) -> bool:
    """Whether the run that made this namespace (its pid is in the name) has ended."""
    rest = name.removeprefix(POD_PREFIX).removeprefix(PROVIDER_PREFIX)
    pid_text = rest.split("-", 1)[0]
    if not pid_text.isdigit():
        try:
            return time.time() - (NETNS_DIR / name).stat().st_mtime > STALE_AFTER_SECONDS
        except FileNotFoundError:
            return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale() -> list[str]:
    """Deletes smpod-/smprov- namespaces (and their /etc/netns files) whose creating process is gone."""
    names = sorted(p.name for p in NETNS_DIR.glob("*")) if NETNS_DIR.is_dir() else []
    stale = [n for n in names if n.startswith((POD_PREFIX, PROVIDER_PREFIX)) and _owner_gone(n)]
    for name in stale:
        _ip("netns", "delete", name, check=False)
        shutil.rmtree(ETC_NETNS_DIR / name, ignore_errors=True)
    return stale


def original_destination(conn: socket.socket) -> tuple[str, int]:
    """Where a connection redirected by iptables was going (``SO_ORIGINAL_DST``), as (address, port)."""
    if conn.family == socket.AF_INET6:
        raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        port = struct.unpack_from("!H", raw, 2)[0]
        return str(ipaddress.IPv6Address(raw[8:24])), port
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return str(ipaddress.IPv4Address(raw[4:8])), port


class NetnsLab:
    """A pod namespace and a provider namespace joined by a veth pair (see the module docstring).

    Attributes after entry: ``pod`` and ``provider`` (namespace names), ``pod_ip``, ``provider_ip``,
    ``pod_ip6``, ``provider_ip6`` (address strings; set up only when ``ipv6`` is true, that is when the
    kernel has IPv6). ``addresses`` maps further names to addresses of their own (give the provider
    namespace such an address with `add_address`).
    """

    def __init__(
        self,
        hosts: Sequence[str] = PROVIDER_HOSTS,
        *,
        hosts_ipv6: bool = False,
        addresses: Mapping[str, str] | None = None,
    ) -> None:
        if UNAVAILABLE is not None:
            raise RuntimeError(f"network namespaces unavailable: {UNAVAILABLE}")
        suffix = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.pod = POD_PREFIX + suffix
        self.provider = PROVIDER_PREFIX + suffix
        self.hosts = tuple(hosts)
        self.hosts_ipv6 = hosts_ipv6
        self.addresses = dict(addresses or {})  # further names, each at its own address
        block = secrets.randbelow(SUBNET.num_addresses // 4)
        base = SUBNET.network_address + 4 * block
        self.pod_ip, self.provider_ip = str(base + 1), str(base + 2)
        self.ipv6 = Path("/proc/sys/net/ipv6").is_dir()
        self.pod_ip6 = f"{SUBNET6_PREFIX}:{block:x}::1"
        self.provider_ip6 = f"{SUBNET6_PREFIX}:{block:x}::2"

    def __enter__(self) -> NetnsLab:
        remove_stale()
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _create(self) -> None:
        for ns in (self.pod, self.provider):
            _ip("netns", "add", ns)
        _ip(
            "-n",
            self.pod,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            self.provider,
        )
        for ns, mine, peer, mine6, peer6 in (
            (self.pod, self.pod_ip, self.provider_ip, self.pod_ip6, self.provider_ip6),
            (self.provider, self.provider_ip, self.pod_ip, self.provider_ip6, self.pod_ip6),
        ):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{mine}/30", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "route", "add", "default", "via", peer)
            if self.ipv6:
                _ip("-n", ns, "-6", "addr", "add", f"{mine6}/64", "dev", "eth0", "nodad")
                _ip("-n", ns, "-6", "route", "add", "default", "via", peer6)
        etc = ETC_NETNS_DIR / self.pod
        etc.mkdir(parents=True, exist_ok=True)
        names = " ".join(self.hosts)
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        if names:
            lines.append(f"{self.provider_ip} {names}")
            if self.hosts_ipv6 and self.ipv6:
                lines.append(f"{self.provider_ip6} {names}")
        lines += [f"{address} {name}" for name, address in self.addresses.items()]
        (etc / "hosts").write_text("\n".join(lines) + "\n")

    def add_address(self, ns: str, cidr: str) -> None:
        """Gives namespace ``ns`` one more address (on ``lo``), e.g. a second provider host."""
        _ip("-n", ns, "addr", "add", cidr, "dev", "lo")

    def close(self) -> None:
        """Removes both namespaces (and with them the veth pair) and the pod's /etc/netns files."""
        for ns in (self.pod, self.provider):
            if (NETNS_DIR / ns).exists():
                _ip("netns", "delete", ns, check=False)
            shutil.rmtree(ETC_NETNS_DIR / ns, ignore_errors=True)

    def command(
        self, ns: str, argv: Sequence[str], user: int | None = None, caps: Sequence[str] = ()
    ) -> list[str]:
        """The argv that runs ``argv`` in namespace ``ns``, as ``user`` (a uid, its own gid, no groups).

        ``caps`` (e.g. ``("dac_read_search",)``) stay with the non-root ``user`` as inheritable and
        ambient capabilities, so the program keeps them across exec.
        """
        prefix = ["ip", "netns", "exec", ns]
        if user is not None:
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
            if caps:
                wanted = ",".join(f"+{cap}" for cap in caps)
                prefix += [f"--inh-caps={wanted}", f"--ambient-caps={wanted}"]
            prefix.append("--")
        return [*prefix, *argv]

    def environment(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """``env`` (default: this process's) with the sbin directories on PATH, where iptables lives."""
        result = dict(os.environ if env is None else env)
        result["PATH"] = os.pathsep.join(p for p in (result.get("PATH", ""), SBIN_PATH) if p)
        return result

    def popen(
        self,
        ns: str,
        argv: Sequence[str],
        user: int | None = None,
        env: Mapping[str, str] | None = None,
        caps: Sequence[str] = (),
        **kwargs: Any,
    ) -> subprocess.Popen[str]:
        """Starts ``argv`` in namespace ``ns`` (text mode; pass stdout=..., stderr=... as for Popen).

        ``ip netns exec`` bind-mounts ``/etc/netns/<ns>/*`` over ``/etc``: the pod sees the lab's hosts.
        """
        kwargs.setdefault("text", True)
        return subprocess.Popen(self.command(ns, argv, user, caps), env=self.environment(env), **kwargs)

    def run(
        self,
        ns: str,
        argv: Sequence[str],
        user: int | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = 60.0,
        check: bool = False,
        caps: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``argv`` in namespace ``ns`` to completion, capturing its output as text."""
        return subprocess.run(
            self.command(ns, argv, user, caps),
            env=self.environment(env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def socket(
        self,
        ns: str,
        family: socket.AddressFamily = socket.AF_INET,
        kind: socket.SocketKind = socket.SOCK_STREAM,
    ) -> socket.socket:
        """A socket of this process that lives in namespace ``ns`` (made by a thread that joined it)."""
        return in_netns(ns, lambda: socket.socket(family, kind))

    def wait_port(self, ns: str, host: str, port: int, timeout: float = 10.0) -> None:
        """Waits until a TCP connection from namespace ``ns`` to (host, port) succeeds (host: an address)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        deadline = time.monotonic() + timeout
        while True:
            with self.socket(ns, family) as probe:
                probe.settimeout(max(0.1, min(1.0, deadline - time.monotonic())))
                try:
                    probe.connect((host, port))
                    return
                except OSError as error:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"{host}:{port} not reachable from {ns} in {timeout}s") from error
            time.sleep(0.05)


def in_netns[T](ns: str, fn: Callable[[], T]) -> T:
    """Calls ``fn`` in a fresh thread that has joined network namespace ``ns``; returns its result.

    Sockets keep the namespace they were made in, so those made by ``fn`` serve the whole process.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            with open(NETNS_DIR / ns) as handle:
                os.setns(handle.fileno(), os.CLONE_NEWNET)
            result.append(fn())
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=target, name=f"netns-{ns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
