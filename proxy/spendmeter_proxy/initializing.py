"""``spendmeter init``: write the pod's redirect rules with iptables-restore, for IPv4 and IPv6.

Runs as the injected init container, inside the pod's network namespace, with NET_ADMIN. Each family is
written atomically with ``iptables-restore --noflush`` (only our chains are rebuilt; every other chain
stays as it was), after reading ``iptables-save -t nat`` to learn whether our jump from ``OUTPUT`` is
already there. IPv6 is skipped, with a message, when the namespace has no IPv6. ``--dry-run`` prints
what would be written for both families and changes nothing. The rules themselves are in
``spendmeter_proxy.rules``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from spendmeter_proxy import rules
from spendmeter_proxy.cli import argument_type
from spendmeter_proxy.rules import Family, RedirectSpec

COMMANDS: dict[Family, tuple[str, str]] = {
    Family.IPV4: ("iptables-save", "iptables-restore"),
    Family.IPV6: ("ip6tables-save", "ip6tables-restore"),
}
IPV6_PROC_FILE = "/proc/net/if_inet6"  # absent when the kernel has no IPv6 for this namespace
TIMEOUT_SECONDS = 30.0


class IptablesError(Exception):
    """An iptables command is missing, not permitted, or refused our input."""


def _redirect_ports(text: str) -> tuple[int, ...]:
    return rules.parse_ports(text, allow_empty=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--proxy-uid",
        type=argument_type(rules.parse_uid),
        required=True,
        metavar="UID",
        help="uid the proxy runs as; its own connections are never redirected",
    )
    parser.add_argument(
        "--proxy-port",
        type=argument_type(rules.parse_port),
        required=True,
        metavar="PORT",
        help="port the transparent proxy listens on (127.0.0.1 and ::1)",
    )
    parser.add_argument(
        "--ports",
        type=argument_type(_redirect_ports),
        default=rules.DEFAULT_PORTS,
        metavar="P,...",
        help="destination ports to redirect (default: 443)",
    )
    parser.add_argument(
        "--exclude-cidrs",
        type=argument_type(rules.parse_cidrs),
        default=(),
        metavar="CIDR,...",
        help="destinations never redirected, IPv4 and IPv6 mixed (e.g. 10.0.0.0/8,fd00::/8)",
    )
    parser.add_argument(
        "--exclude-ports",
        type=argument_type(rules.parse_ports),
        default=(),
        metavar="P,...",
        help="destination ports never redirected",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the iptables-restore input for both families and exit"
    )


def _spec(args: argparse.Namespace) -> RedirectSpec:
    return RedirectSpec(
        proxy_uid=args.proxy_uid,
        proxy_port=args.proxy_port,
        ports=tuple(args.ports),
        exclude_cidrs=tuple(args.exclude_cidrs),
        exclude_ports=tuple(args.exclude_ports),
    )


def _execute(argv: list[str], stdin: str | None = None) -> str:
    """Runs one iptables command and returns its output, or raises IptablesError saying what to do."""
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
        )
    except FileNotFoundError:
        raise IptablesError(
            f"{argv[0]} not found on PATH: the init container's image needs the iptables package"
        ) from None
    except subprocess.TimeoutExpired:
        raise IptablesError(f"{argv[0]} did not finish within {TIMEOUT_SECONDS:.0f}s") from None
    if done.returncode != 0:
        detail = done.stderr.strip() or f"exit status {done.returncode}"
        if any(s in done.stderr for s in ("Permission denied", "Operation not permitted", "must be root")):
            raise IptablesError(
                f"{argv[0]} is not permitted ({detail}): the init container needs the NET_ADMIN capability "
                "in the pod's network namespace"
            )
        raise IptablesError(f"{' '.join(argv)} failed: {detail}")
    return done.stdout


def ipv6_available() -> bool:
    """Whether this network namespace has IPv6 at all (the kernel may be booted without it)."""
    return os.path.exists(IPV6_PROC_FILE)


def read_jumps(family: Family) -> tuple[rules.Rule, ...]:
    """The jumps to our chain now in ``OUTPUT`` of the ``nat`` table."""
    save, _ = COMMANDS[family]
    return rules.find_jumps(_execute([save, "-t", "nat"]))


def apply(spec: RedirectSpec, family: Family) -> None:
    """Rebuilds our chains for one family, in one atomic iptables-restore."""
    _, restore = COMMANDS[family]
    _execute([restore, "--noflush"], stdin=rules.render_restore(spec, family, read_jumps(family)))


def dry_run(spec: RedirectSpec) -> None:
    """Prints the restore input of both families (against the current tables when they can be read)."""
    for family in Family:
        _, restore = COMMANDS[family]
        try:
            existing = read_jumps(family)
        except IptablesError as error:
            print(f"spendmeter init: {error}; showing the rules for empty tables", file=sys.stderr)
            existing = ()
        print(f"# {family.label}: {restore} --noflush")
        print(rules.render_restore(spec, family, existing), end="")


def run(args: argparse.Namespace) -> int:
    spec = _spec(args)
    if args.dry_run:
        dry_run(spec)
        return 0
    families = list(Family)
    if not ipv6_available():
        print("spendmeter init: IPv6 is off in this network namespace; writing IPv4 only", file=sys.stderr)
        families.remove(Family.IPV6)
    for family in families:
        try:
            apply(spec, family)
        except IptablesError as error:
            print(f"spendmeter init: {family.label}: {error}", file=sys.stderr)
            return 1
        print(f"spendmeter init: {family.label} redirect to port {spec.proxy_port} written", file=sys.stderr)
    return 0
