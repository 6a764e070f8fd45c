"""A curl-style ``--connect-to``: send the upstream connection for HOST:PORT to another address.

The TLS name (SNI) and the Host header stay those of the original host; only the TCP destination changes.
Used by ``spendmeter demo`` (where the providers' real names lead to a local stand-in) and by private
gateways reachable under another address.
"""

from __future__ import annotations

from collections.abc import Sequence

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import server_hooks

Address = tuple[str, int]


def _split(part: str, what: str, spec: str) -> Address:
    host, sep, port = part.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"connect-to {spec!r}: {what} must be HOST:PORT")
    return host.strip("[]").lower(), int(port)


def parse_connect_to(spec: str) -> tuple[Address, Address]:
    """``api.openai.com:443=127.0.0.1:8443`` -> ((api.openai.com, 443), (127.0.0.1, 8443))."""
    source, sep, target = spec.partition("=")
    if not sep:
        raise ValueError(f"connect-to {spec!r}: expected HOST:PORT=ADDRESS:PORT")
    return _split(source, "the original", spec), _split(target, "the target", spec)


class ConnectTo:
    def __init__(self) -> None:
        self.table: dict[Address, Address] = {}

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "spendmeter_connect_to",
            Sequence[str],
            [],
            """
            Connect to another address for a host, as HOST:PORT=ADDRESS:PORT (like curl's --connect-to).
            The TLS server name and the Host header stay those of the original host.
            """,
        )

    def configure(self, updated: set[str]) -> None:
        if "spendmeter_connect_to" in updated:
            self.table = dict(parse_connect_to(s) for s in ctx.options.spendmeter_connect_to)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """Explicit mode: the tunnel itself goes to the target, so its connection is reused as usual."""
        target = self.table.get((flow.request.host.lower(), flow.request.port))
        if target is not None:
            flow.request.host, flow.request.port = target

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Transparent mode (no CONNECT): the connection to the original destination goes to the target."""
        if not self.table or data.server.address is None:
            return
        host, port = data.server.address[0], data.server.address[1]
        target = self.table.get((str(host).lower(), port))
        if target is not None:
            data.server.address = target
