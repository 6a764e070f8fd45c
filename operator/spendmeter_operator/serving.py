"""The operator's servers: the HTTPS admission webhook (kopf's, registered with the API server) and the
plain-HTTP health endpoints for the kubelet's probes (and ``/metrics``, the budgets' metrics).

`RegisteringWebhookServer` wraps kopf's webhook server: every time kopf (re)starts it, for instance after
the certificate files changed, it writes the MutatingWebhookConfiguration for the address and CA bundle
kopf reports. ``/healthz`` answers while the event loop runs; ``/readyz`` once kopf is ready and the
webhook is served (and registered).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import kopf
import prometheus_client

from spendmeter_operator import certificates, webhooks
from spendmeter_operator.cluster import Cluster


@dataclass(frozen=True, slots=True)
class ServiceRef:
    namespace: str
    name: str
    port: int = 443


def certificate_files(directory: Path | None, hosts: Iterable[str]) -> tuple[Path, Path, Path]:
    """(CA bundle, certificate, key): read from ``directory`` (``ca.crt``, ``tls.crt``, ``tls.key``, as
    cert-manager writes them) when it has them, else freshly made (into ``directory`` or a private one)."""
    if directory is not None and (directory / "tls.crt").exists() and (directory / "tls.key").exists():
        ca = directory / "ca.crt"
        return (ca if ca.exists() else directory / "tls.crt"), directory / "tls.crt", directory / "tls.key"
    target = directory if directory is not None else Path(tempfile.mkdtemp(prefix="spendmeter-webhook-"))
    return certificates.make_certificates(hosts).write(target)


class RegisteringWebhookServer:
    """kopf's webhook server, plus the webhook configuration written for each address it reports."""

    def __init__(
        self,
        server: kopf.WebhookServer,
        register: Callable[[dict[str, Any]], Awaitable[None]] | None,
        service: ServiceRef | None = None,
    ) -> None:
        self.server = server
        self.register = register
        self.service = service
        self.serving = asyncio.Event()

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in self.server(fn):
            config = dict(client_config)
            if self.service is not None:
                del config["url"]
                config["service"] = {
                    "namespace": self.service.namespace,
                    "name": self.service.name,
                    "port": self.service.port,
                }
            if self.register is not None:
                await self.register(config)
            self.serving.set()
            yield client_config


def webhook_registrar(
    cluster: Cluster, skip_namespaces: Iterable[str], timeout_seconds: int
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def register(client_config: dict[str, Any]) -> None:
        body = webhooks.configuration(client_config, skip_namespaces, timeout_seconds=timeout_seconds)
        await cluster.apply_webhook_configuration(body)

    return register


async def serve_health(
    host: str,
    port: int,
    ready: Callable[[], bool],
    metrics: prometheus_client.CollectorRegistry | None = None,
) -> None:
    """Serve ``/healthz``, ``/readyz`` and (given a registry) ``/metrics`` until cancelled."""

    async def healthz(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"status": "ok"})

    async def readyz(request: aiohttp.web.Request) -> aiohttp.web.Response:
        ok = ready()
        return aiohttp.web.json_response({"ready": ok}, status=200 if ok else 503)

    async def metrics_page(request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = prometheus_client.generate_latest(metrics) if metrics is not None else b""
        return aiohttp.web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get("/healthz", healthz), aiohttp.web.get("/readyz", readyz)])
    if metrics is not None:
        app.add_routes([aiohttp.web.get("/metrics", metrics_page)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await aiohttp.web.TCPSite(runner, host, port).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
