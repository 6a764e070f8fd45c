"""``spendmeter proxy``: runs mitmproxy with the metering addon, the status server and a fresh CA.

At every start the proxy makes a new CA in a private directory (mode 0700) that only the proxy can read;
it publishes the CA certificate as ``CA_DIR/ca.pem`` and the trust bundle (system CAs + that certificate) as
``CA_DIR/ca-bundle.pem`` for the app containers. The CA key never leaves the private directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from mitmproxy import options
from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from prometheus_client import CollectorRegistry, disable_created_metrics

from spendmeter_proxy.addon import SpendMeter
from spendmeter_proxy.identity import parse_identity
from spendmeter_proxy.redirecting import ConnectTo
from spendmeter_proxy.serving import StatusServer
from spendmeter_proxy.trusting import publish_ca, upstream_trust

logger = logging.getLogger("spendmeter.proxy")
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=("transparent", "explicit"),
        default="transparent",
        help="transparent: iptables-redirected traffic; explicit: an HTTP CONNECT proxy",
    )
    parser.add_argument(
        "--listen-host",
        action="append",
        default=None,
        help="address to listen on (repeatable; default 127.0.0.1 and ::1)",
    )
    parser.add_argument("--listen-port", type=int, default=15001)
    parser.add_argument("--metrics-host", default="", help="address of /metrics and /readyz (default: all)")
    parser.add_argument("--metrics-port", type=int, default=9464)
    parser.add_argument("--ca-dir", type=Path, required=True, help="where to write ca.pem and ca-bundle.pem")
    parser.add_argument(
        "--prices",
        action="extend",
        nargs="+",
        default=[],
        metavar="FILE",
        help="PriceBook YAML files merged in order over the built-in prices, reloaded when they change",
    )
    parser.add_argument(
        "--budgets",
        action="extend",
        nargs="+",
        default=[],
        metavar="FILE",
        help="budget block files written by the operator (missing files: no blocks), reloaded when they change",
    )
    parser.add_argument(
        "--upstream-ca", type=Path, help="a CA trusted for upstream servers besides the system's"
    )
    parser.add_argument(
        "--receipts", default="-", metavar="PATH|-", help="JSON receipt lines (default stdout)"
    )
    parser.add_argument(
        "--llm-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]=PROVIDER[/API]",
        help="an extra host to meter, e.g. a self-hosted gateway (repeatable)",
    )
    parser.add_argument(
        "--connect-to",
        action="append",
        default=[],
        metavar="HOST:PORT=ADDR:PORT",
        help="connect to ADDR:PORT for HOST:PORT, keeping the TLS name (repeatable)",
    )
    parser.add_argument(
        "--waste-window",
        type=float,
        default=600.0,
        help="seconds within which a repeated call is a duplicate or a retry",
    )
    parser.add_argument("--log-level", default=os.environ.get("SPENDMETER_LOG_LEVEL", "info"))


def modes(mode: str, hosts: list[str], port: int) -> list[str]:
    kind = "transparent" if mode == "transparent" else "regular"
    return [f"{kind}@{h}:{port}" for h in hosts]


def ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def serve(args: argparse.Namespace) -> int:
    disable_created_metrics()  # *_created series only double the scrape size
    registry = CollectorRegistry()
    identity = parse_identity(os.environ)
    status = StatusServer(registry, args.metrics_host, args.metrics_port)
    confdir = Path(tempfile.mkdtemp(prefix="spendmeter-ca-"))  # 0700: the CA key stays here
    hosts = args.listen_host or (["127.0.0.1", "::1"] if ipv6_loopback() else ["127.0.0.1"])
    opts = options.Options(
        mode=modes(args.mode, hosts, args.listen_port),
        confdir=str(confdir),
    )
    master = Master(opts)
    # Only the addons a metering proxy needs: every addon is offered every event, so mitmproxy's full
    # default set (playback, scripting, onboarding at mitm.it, ...) would cost time on every call.
    master.addons.add(
        core.Core(),
        disable_h2c.DisableH2C(),
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        errorcheck.ErrorCheck(),
    )
    meter = SpendMeter(registry, identity)
    master.addons.add(meter, ConnectTo(), Ready(status, confdir, args.ca_dir))
    opts.update(
        spendmeter_llm_hosts=args.llm_host,
        spendmeter_prices=[str(p) for p in args.prices],
        spendmeter_budgets=[str(p) for p in args.budgets],
        spendmeter_receipts=args.receipts,
        spendmeter_connect_to=args.connect_to,
        spendmeter_waste_window=args.waste_window,
        # Streams must reach the app as they arrive, and a 20 MB prompt must not be a problem.
        stream_large_bodies="64m",
        connection_strategy="lazy",
    )
    if args.upstream_ca:
        opts.update(ssl_verify_upstream_trusted_ca=str(upstream_trust(confdir, args.upstream_ca)))
    status.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, master.shutdown)
    logger.info("spendmeter proxy (%s) on %s, metrics on :%d", args.mode, ", ".join(opts.mode), status.port)
    try:
        await master.run()
    finally:
        status.stop()
    return 0


class Ready:
    """Publishes the CA and turns /readyz green once mitmproxy's servers listen."""

    def __init__(self, status: StatusServer, confdir: Path, ca_dir: Path) -> None:
        self.status, self.confdir, self.ca_dir = status, confdir, ca_dir

    def running(self) -> None:
        publish_ca(self.confdir, self.ca_dir)
        self.status.ready.set()
        logger.info("ready: CA bundle at %s", self.ca_dir / "ca-bundle.pem")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(serve(args))
    except (ValueError, OSError) as e:
        print(f"spendmeter proxy: {e}", file=sys.stderr)
        return 1
