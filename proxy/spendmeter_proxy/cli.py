"""The ``spendmeter`` command: one entry point for every part of the product.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported only when their subcommand runs, so ``spendmeter init`` in a minimal init
container never imports mitmproxy and ``spendmeter proxy`` never imports kopf.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "proxy": ("spendmeter_proxy.running", "Run the metering sidecar proxy."),
    "init": ("spendmeter_proxy.initializing", "Write the pod's iptables redirect rules (v4 and v6)."),
    "demo": ("spendmeter_proxy.demo", "Run the whole path on this machine: proxy, provider stand-in, SDKs."),
    "operator": ("spendmeter_operator.cli", "Run the Kubernetes operator (admission webhook, PriceBooks)."),
    "report": (
        "spendmeter_operator.reporting",
        "Report LLM spend over a period from Prometheus (table, CSV, JSON, FOCUS).",
    ),
}


def argument_type[T](parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=`` from a pure ``parse_*`` function: its ValueError becomes a usage error (exit 2)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spendmeter", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
    result: int = args._run(args)
    return result
