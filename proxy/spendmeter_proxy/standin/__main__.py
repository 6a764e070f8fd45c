"""``python -m spendmeter_proxy.standin``: run the provider stand-in as a process until SIGINT/SIGTERM.

Prints one line ``standin ready <url> ca=<path>`` (flushed) once it listens, so a parent process can
wait for it and read the port (``--listen 127.0.0.1:0`` picks a free one).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from spendmeter_proxy.standin.exchanges import load_exchanges
from spendmeter_proxy.standin.rules import parse_rules
from spendmeter_proxy.standin.serving import DEFAULT_CHUNK_DELAY_S, StandIn


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8443`` for IPv6) as a (host, port) pair."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _listen(value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", type=_listen, default=("127.0.0.1", 0), metavar="HOST:PORT")
    parser.add_argument(
        "--tls-dir", type=Path, help="where the test CA lives (ca.pem); plain HTTP if omitted"
    )
    parser.add_argument("--samples", type=Path, help="directory of recorded exchanges to replay")
    parser.add_argument("--rules", type=Path, help="YAML or JSON file of scripted rules")
    parser.add_argument("--chunk-delay-ms", type=float, default=DEFAULT_CHUNK_DELAY_S * 1000)
    parser.add_argument("--no-synthesize", action="store_true", help="answer only from recordings")


async def _serve(standin: StandIn) -> None:
    await standin.start()
    ca = standin.ca_path or "-"
    print(f"standin ready {standin.url} ca={ca}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await standin.close()


def run(args: argparse.Namespace) -> int:
    rules = parse_rules(yaml.safe_load(args.rules.read_text())) if args.rules else []
    standin = StandIn(
        load_exchanges(args.samples) if args.samples else (),
        tls_dir=args.tls_dir,
        host=args.listen[0],
        port=args.listen[1],
        chunk_delay_s=args.chunk_delay_ms / 1000,
        rules=rules,
        synthesize=not args.no_synthesize,
    )
    asyncio.run(_serve(standin))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spendmeter_proxy.standin", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ValueError as e:
        print(f"standin: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
