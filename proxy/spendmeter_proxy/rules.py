"""The pod's redirect rules as data, and their rendering to ``iptables-restore`` input.

``spendmeter init`` sends the pod's outbound TCP to the LLM ports (443 by default) to the sidecar proxy
listening on the loopback address, using the ``nat`` table's ``OUTPUT`` chain and a ``REDIRECT`` target
(the transparent proxy reads the original destination with ``SO_ORIGINAL_DST``). Exempt from the
redirect are: the proxy's own packets (``-m owner --uid-owner``), loopback, excluded CIDRs and ports.

Every rule lives in two chains of our own, ``SPENDMETER_OUTPUT`` and ``SPENDMETER_REDIRECT``, reached
from ``OUTPUT`` by a single jump. Rebuilding is idempotent: the restore input declares (and so flushes)
our chains, and adds the jump only when it is not already there, so running ``spendmeter init`` twice
leaves exactly one copy and never touches chains that belong to others (a service mesh's, say).

This module is pure: parsing of arguments, the rule set and its text. Running the iptables commands is
``spendmeter_proxy.initializing``'s job.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

OUTPUT_CHAIN = "SPENDMETER_OUTPUT"
REDIRECT_CHAIN = "SPENDMETER_REDIRECT"
DEFAULT_PORTS: tuple[int, ...] = (443,)
MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid" to the kernel


class Family(enum.Enum):
    """An IP family with its own set of tables (``iptables`` or ``ip6tables``)."""

    IPV4 = 4
    IPV6 = 6

    @property
    def loopback(self) -> IPNetwork:
        """The loopback destinations, never redirected."""
        if self is Family.IPV4:
            return ipaddress.IPv4Network("127.0.0.0/8")
        return ipaddress.IPv6Network("::1/128")

    @property
    def label(self) -> str:
        return f"IPv{self.value}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One iptables rule of the ``nat`` table: its chain and the match and target arguments."""

    chain: str
    args: tuple[str, ...]

    def render(self, command: str = "-A") -> str:
        """The rule as a line of iptables-restore input: ``-A`` appends, ``-D`` deletes, ``-I`` inserts."""
        position = ("1",) if command == "-I" else ()
        return " ".join((command, self.chain, *position, *self.args))


JUMP = Rule("OUTPUT", ("-p", "tcp", "-j", OUTPUT_CHAIN))
"""The one rule we add to a chain that is not ours: ``OUTPUT``'s TCP goes through our chain first."""


@dataclass(frozen=True, slots=True)
class RedirectSpec:
    """What ``spendmeter init`` redirects, and what it leaves alone."""

    proxy_uid: int
    proxy_port: int
    ports: tuple[int, ...] = DEFAULT_PORTS
    exclude_cidrs: tuple[IPNetwork, ...] = ()
    exclude_ports: tuple[int, ...] = ()

    def cidrs(self, family: Family) -> tuple[IPNetwork, ...]:
        """The excluded CIDRs of one family."""
        return tuple(c for c in self.exclude_cidrs if c.version == family.value)


def chain_rules(spec: RedirectSpec, family: Family) -> tuple[Rule, ...]:
    """The contents of our two chains for one family, in order (first match wins)."""
    skip = ("-j", "RETURN")
    rules = [
        Rule(OUTPUT_CHAIN, ("-m", "owner", "--uid-owner", str(spec.proxy_uid), *skip)),
        Rule(OUTPUT_CHAIN, ("-o", "lo", *skip)),
        Rule(OUTPUT_CHAIN, ("-d", str(family.loopback), *skip)),
    ]
    rules += [Rule(OUTPUT_CHAIN, ("-d", str(cidr), *skip)) for cidr in spec.cidrs(family)]
    rules += [Rule(OUTPUT_CHAIN, ("-p", "tcp", "--dport", str(p), *skip)) for p in spec.exclude_ports]
    rules += [Rule(OUTPUT_CHAIN, ("-p", "tcp", "--dport", str(p), "-j", REDIRECT_CHAIN)) for p in spec.ports]
    rules.append(Rule(REDIRECT_CHAIN, ("-p", "tcp", "-j", "REDIRECT", "--to-ports", str(spec.proxy_port))))
    return tuple(rules)


def find_jumps(saved: str) -> tuple[Rule, ...]:
    """The rules in ``OUTPUT`` of the ``nat`` table that jump to our chain, read from ``iptables-save``."""
    found: list[Rule] = []
    table = ""
    for line in saved.splitlines():
        words = line.split()
        if not words or line.startswith("#"):
            continue
        if words[0].startswith("*"):
            table = words[0][1:]
        elif table == "nat" and words[:2] == ["-A", "OUTPUT"] and words[-2:] == ["-j", OUTPUT_CHAIN]:
            found.append(Rule("OUTPUT", tuple(words[2:])))
    return tuple(found)


def jump_changes(existing: Iterable[Rule]) -> tuple[str, ...]:
    """Restore lines that leave exactly one jump to our chain in ``OUTPUT``, given the jumps there now.

    Our jump, present once, stays where it is; otherwise every other form is deleted and ours is put
    first in ``OUTPUT``, so the pod's traffic meets the proxy before any other redirect.
    """
    existing = tuple(existing)
    if existing == (JUMP,):
        return ()
    return (*(rule.render("-D") for rule in existing), JUMP.render("-I"))


def render_restore(spec: RedirectSpec, family: Family, existing_jumps: Iterable[Rule] = ()) -> str:
    """The ``iptables-restore --noflush`` input that builds our rules for one family."""
    lines = ["*nat"]
    for chain in (OUTPUT_CHAIN, REDIRECT_CHAIN):
        lines += [f":{chain} - [0:0]", f"-F {chain}"]
    lines += [rule.render() for rule in chain_rules(spec, family)]
    lines += jump_changes(existing_jumps)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def parse_port(text: str) -> int:
    """A TCP port number, 1 to 65535."""
    try:
        port = int(text.strip())
    except ValueError:
        raise ValueError(f"port {text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (1 to 65535)")
    return port


def parse_ports(text: str, *, allow_empty: bool = True) -> tuple[int, ...]:
    """A comma-separated list of ports, without repeats, in the order given."""
    ports = tuple(dict.fromkeys(parse_port(item) for item in text.split(",") if item.strip()))
    if not ports and not allow_empty:
        raise ValueError("no port given")
    return ports


def parse_cidr(text: str) -> IPNetwork:
    """An IPv4 or IPv6 network (``10.0.0.0/8``, ``fd00::/8``); a bare address means that address only."""
    text = text.strip()
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or fd00::/8)") from None
    raise ValueError(f"{text!r} has host bits set; did you mean {network}?")


def parse_cidrs(text: str) -> tuple[IPNetwork, ...]:
    """A comma-separated list of CIDRs (may be empty), without repeats, in the order given."""
    return tuple(dict.fromkeys(parse_cidr(item) for item in text.split(",") if item.strip()))


def parse_uid(text: str) -> int:
    """The proxy's user id: a non-root uid (root's packets would all escape the redirect)."""
    try:
        uid = int(text.strip())
    except ValueError:
        raise ValueError(f"uid {text!r} is not a number") from None
    if uid < 0 or uid > MAX_UID:
        raise ValueError(f"uid {uid} is out of range (1 to {MAX_UID})")
    if uid == 0:
        raise ValueError("uid 0 is root: the proxy must run as a non-root uid, or every root process escapes")
    return uid
