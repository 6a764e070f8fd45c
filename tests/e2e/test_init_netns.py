"""`spendmeter init` in a real network namespace, proven with real connections.

A pod namespace gets the rules from the installed console script; a listener on the proxy port in the
pod and listeners in the provider namespace each answer with their own name, so every connection shows
where it landed. Clients are separate processes (``bash``'s ``/dev/tcp``), as an application would be.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress

import pytest

from .netns import NetnsLab, original_destination, requires_netns

pytestmark = [requires_netns, pytest.mark.root]

PROXY_UID = 1500
PROXY_PORT = 15001
SECOND_PROVIDER_IP = "172.30.213.2"  # exists only inside the provider namespace


class Listener:
    """Answers every TCP connection on a socket with its name; notes redirected ones' original destination."""

    def __init__(self, sock: socket.socket, name: str, seen: list[tuple[str, int]]) -> None:
        self.sock = sock
        self.name = name
        self.seen = seen
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                with suppress(OSError):  # no connection tracking: nothing was redirected
                    self.seen.append(original_destination(conn))
                conn.sendall(self.name.encode())


@contextmanager
def proxy_and_provider(lab: NetnsLab, ports: tuple[int, ...] = (443, 80)) -> Iterator[list[tuple[str, int]]]:
    """The proxy's stand-in on the pod's loopback and the provider's listeners on ``ports``, v4 and v6.

    Yields the original destinations of the connections that reached the proxy, in order.
    """
    seen: list[tuple[str, int]] = []
    families = [(socket.AF_INET, "127.0.0.1", "0.0.0.0")]
    if lab.ipv6:
        families.append((socket.AF_INET6, "::1", "::"))
    with ExitStack() as stack:
        for family, loopback, anywhere in families:
            places = [(lab.pod, "proxy", (loopback, PROXY_PORT))]
            places += [(lab.provider, "provider", (anywhere, port)) for port in ports]
            for ns, name, address in places:
                sock = stack.enter_context(lab.socket(ns, family))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(16)
                Listener(sock, name, seen)
        yield seen


def answer(lab: NetnsLab, host: str, port: int, user: int | None = None) -> str:
    """Who answers a TCP connection from the pod to (host, port): "proxy", "provider" or the error."""
    script = 'exec 3<>"/dev/tcp/$0/$1" && cat <&3'
    done = lab.run(lab.pod, ["timeout", "5", "bash", "-c", script, host, str(port)], user=user, timeout=10)
    return done.stdout if done.returncode == 0 else f"failed ({done.returncode}): {done.stderr.strip()}"


def init(lab: NetnsLab, command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*command, "init", "--proxy-uid", str(PROXY_UID), "--proxy-port", str(PROXY_PORT), *args]
    return lab.run(lab.pod, argv)


def saved_rules(lab: NetnsLab) -> str:
    """Both families' rule sets of the pod, as iptables-save shows them (without the dated comments)."""
    text = ""
    for save in ("iptables-save", "ip6tables-save"):
        done = lab.run(lab.pod, [save], check=True)
        text += "".join(line for line in done.stdout.splitlines(keepends=True) if not line.startswith("#"))
    return text


def test_https_goes_to_the_proxy_with_its_original_destination(
    netns_lab: NetnsLab, spendmeter_command: list[str]
) -> None:
    lab = netns_lab
    with proxy_and_provider(lab) as seen:
        assert answer(lab, lab.provider_ip, 443) == "provider"  # before init: straight through
        done = init(lab, spendmeter_command)
        assert done.returncode == 0, done.stderr
        assert answer(lab, lab.provider_ip, 443) == "proxy"
        assert answer(lab, "api.openai.com", 443) == "proxy"
        assert answer(lab, lab.provider_ip, 443, user=PROXY_UID) == "provider"
        assert answer(lab, lab.provider_ip, 80) == "provider"
        assert answer(lab, "127.0.0.1", PROXY_PORT) == "proxy"  # loopback itself is left alone
        # A connection that was not redirected reports its own destination.
        assert seen == [(lab.provider_ip, 443), (lab.provider_ip, 443), ("127.0.0.1", PROXY_PORT)]


def test_ipv6_goes_to_the_proxy_on_the_ipv6_loopback(
    netns_lab: NetnsLab, spendmeter_command: list[str]
) -> None:
    lab = netns_lab
    if not lab.ipv6:
        pytest.skip("the kernel has no IPv6")
    with proxy_and_provider(lab) as seen:
        done = init(lab, spendmeter_command)
        assert done.returncode == 0, done.stderr
        assert answer(lab, lab.provider_ip6, 443) == "proxy"
        assert seen == [(lab.provider_ip6, 443)]
        assert answer(lab, lab.provider_ip6, 443, user=PROXY_UID) == "provider"
        assert answer(lab, lab.provider_ip6, 80) == "provider"


def test_excluded_cidrs_and_ports_go_straight_through(
    netns_lab: NetnsLab, spendmeter_command: list[str]
) -> None:
    lab = netns_lab
    lab.add_address(lab.provider, f"{SECOND_PROVIDER_IP}/32")
    excluded = [f"{lab.provider_ip}/32"] + ([f"{lab.provider_ip6}/128"] if lab.ipv6 else [])
    with proxy_and_provider(lab, ports=(443, 8443, 9443)):
        done = init(
            lab,
            spendmeter_command,
            "--ports=443,8443,9443",
            "--exclude-cidrs=" + ",".join(excluded),
            "--exclude-ports=9443",
        )
        assert done.returncode == 0, done.stderr
        assert answer(lab, lab.provider_ip, 443) == "provider"
        assert answer(lab, SECOND_PROVIDER_IP, 443) == "proxy"
        assert answer(lab, SECOND_PROVIDER_IP, 8443) == "proxy"
        assert answer(lab, SECOND_PROVIDER_IP, 9443) == "provider"
        if lab.ipv6:
            assert answer(lab, lab.provider_ip6, 443) == "provider"


def test_running_twice_leaves_one_copy_and_other_chains_alone(
    netns_lab: NetnsLab, spendmeter_command: list[str]
) -> None:
    lab = netns_lab
    mesh = "*nat\n:MESH_OUTPUT - [0:0]\n-A MESH_OUTPUT -p tcp -j RETURN\n"
    mesh += "-A OUTPUT -p tcp -j MESH_OUTPUT\nCOMMIT\n"  # a service mesh's rules, there before ours
    lab.run(lab.pod, ["iptables-restore", "--noflush"], input=mesh, check=True)
    assert init(lab, spendmeter_command).returncode == 0
    first = saved_rules(lab)
    done = init(lab, spendmeter_command)
    assert done.returncode == 0, done.stderr
    assert saved_rules(lab) == first
    v4 = lab.run(lab.pod, ["iptables", "-t", "nat", "-S", "OUTPUT"], check=True).stdout.splitlines()
    assert v4[1:] == ["-A OUTPUT -p tcp -j SPENDMETER_OUTPUT", "-A OUTPUT -p tcp -j MESH_OUTPUT"]
    assert "-A MESH_OUTPUT -p tcp -j RETURN" in first


def test_dry_run_prints_both_families_and_changes_nothing(
    netns_lab: NetnsLab, spendmeter_command: list[str]
) -> None:
    lab = netns_lab
    before = saved_rules(lab)
    done = init(lab, spendmeter_command, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("*nat") == 2
    assert f"--to-ports {PROXY_PORT}" in done.stdout
    assert "-d ::1/128 -j RETURN" in done.stdout
    assert saved_rules(lab) == before
    with proxy_and_provider(lab):
        assert answer(lab, lab.provider_ip, 443) == "provider"


def test_without_net_admin_it_fails_and_says_why(netns_lab: NetnsLab, spendmeter_command: list[str]) -> None:
    lab = netns_lab
    no_net_admin = ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--"]
    argv = [
        *no_net_admin,
        *spendmeter_command,
        "init",
        f"--proxy-uid={PROXY_UID}",
        f"--proxy-port={PROXY_PORT}",
    ]
    done = lab.run(lab.pod, argv)
    assert done.returncode == 1
    assert "NET_ADMIN" in done.stderr
