"""The proxy's own HTTP endpoints on the metrics port: ``/metrics``, ``/readyz`` and ``/healthz``.

A small threaded server beside mitmproxy's event loop, so that a scrape never waits on LLM traffic.
``/readyz`` turns 200 once the proxy listens and the CA bundle is written (the pod's startup probe).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


class StatusServer:
    """Serves the endpoints for ``registry`` on ``host:port`` in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str = "", port: int = 9464) -> None:
        self.registry = registry
        self.ready = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._reply(200, encoder(server.registry), content_type)
                elif path == "/readyz":
                    ok = server.ready.is_set()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"starting\n", "text/plain")
                elif path == "/healthz":
                    self._reply(200, b"ok\n", "text/plain")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="spendmeter-status", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
