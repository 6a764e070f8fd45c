"""``spendmeter operator``: run the operator (admission webhook, PriceBook prices, health endpoints).

The chart passes the injection defaults as options; each pod's ``spendmeter.io/*`` annotations override
them. Replicas elect one leader through kopf peering (a ClusterKopfPeering named by ``--peering``); every
replica serves the webhook, only the leader writes ConfigMaps and PriceBook statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import kopf
import kubernetes
from spendmeter_proxy import rules

from spendmeter_operator import handlers, options, serving, webhooks
from spendmeter_operator.cluster import Cluster


def _argument[T](parse: Callable[[str], T]) -> Callable[[str], T]:
    """Turns a ``parse_*`` function's ValueError into argparse's usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


def parse_cost_label(text: str) -> tuple[str, str]:
    """``POD_LABEL[=NAME]``: a pod label whose value becomes the cost label NAME (default: the label)."""
    key, _, name = text.partition("=")
    if not key.strip():
        raise ValueError(
            f"a cost label is POD_LABEL[=NAME], e.g. team or app.kubernetes.io/team=team (got {text!r})"
        )
    return key.strip(), (name.strip() or key.strip().rsplit("/", 1)[-1])


def parse_service(text: str) -> tuple[str, int]:
    """``NAME[:PORT]``, the operator's Service in its own namespace."""
    name, _, port = text.partition(":")
    if not name:
        raise ValueError(f"a service is NAME[:PORT] (got {text!r})")
    return name, int(port) if port else 443


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = options.Options()
    r = d.resources
    env = os.environ.get
    parser.add_argument(
        "--namespace",
        default=env("SPENDMETER_OPERATOR_NAMESPACE", "spendmeter-system"),
        help="the operator's own namespace, never injected (default: %(default)s)",
    )
    inject = parser.add_argument_group("injection defaults (a pod's annotations override them)")
    inject.add_argument("--image", default=env("SPENDMETER_IMAGE", d.image), help="sidecar image")
    inject.add_argument("--image-pull-policy", default=d.image_pull_policy)
    inject.add_argument("--mode", type=_argument(options.parse_mode), default=d.mode)
    inject.add_argument(
        "--exclude-outbound-ports", type=_argument(rules.parse_ports), default=(), metavar="P,..."
    )
    inject.add_argument(
        "--exclude-outbound-cidrs", type=_argument(options.parse_cidrs), default=(), metavar="CIDR,..."
    )
    inject.add_argument(
        "--llm-host",
        type=_argument(options.parse_llm_host),
        action="append",
        default=[],
        metavar="HOST[:PORT]=PROVIDER",
        help="an extra LLM API host for every proxy (repeatable)",
    )
    inject.add_argument(
        "--cost-label",
        type=_argument(parse_cost_label),
        action="append",
        default=[],
        metavar="POD_LABEL[=NAME]",
        help="a pod label exported as a cost label (repeatable)",
    )
    inject.add_argument("--proxy-cpu", type=_argument(options.parse_quantity), default=r.cpu_request)
    inject.add_argument("--proxy-memory", type=_argument(options.parse_quantity), default=r.memory_request)
    inject.add_argument("--proxy-cpu-limit", type=_argument(options.parse_quantity), default=r.cpu_limit)
    inject.add_argument(
        "--proxy-memory-limit", type=_argument(options.parse_quantity), default=r.memory_limit
    )
    inject.add_argument(
        "--prices-configmap",
        default=d.prices_configmap,
        help="name of the per-namespace ConfigMap of effective prices (default: %(default)s)",
    )
    hook = parser.add_argument_group("admission webhook")
    hook.add_argument(
        "--webhook-listen", default="0.0.0.0", help="address to listen on (default: %(default)s)"
    )
    hook.add_argument("--webhook-port", type=int, default=9443)
    hook.add_argument(
        "--webhook-host",
        default=None,
        help="host name or address the API server calls (default: the listen address)",
    )
    hook.add_argument(
        "--webhook-service",
        type=_argument(parse_service),
        default=None,
        metavar="NAME[:PORT]",
        help="register the webhook through this Service in --namespace instead of a URL",
    )
    hook.add_argument(
        "--webhook-cert-dir",
        type=Path,
        default=None,
        help="folder with tls.crt, tls.key (and ca.crt), reloaded on change; made if absent",
    )
    hook.add_argument("--webhook-timeout", type=int, default=webhooks.TIMEOUT_SECONDS, metavar="SECONDS")
    hook.add_argument(
        "--no-register-webhook",
        dest="register_webhook",
        action="store_false",
        help="leave the MutatingWebhookConfiguration to the chart",
    )
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--health-port", type=int, default=8080, help="/healthz and /readyz (0: none)")
    run_group.add_argument(
        "--peering", default="spendmeter", help="ClusterKopfPeering name (default: %(default)s)"
    )
    run_group.add_argument("--priority", type=int, default=0, help="peering priority; the highest leads")
    run_group.add_argument("--standalone", action="store_true", help="no peering (a single replica)")
    run_group.add_argument("--verbose", "-v", action="store_true")


def settings_from(args: argparse.Namespace) -> handlers.Settings:
    defaults = options.Options(
        image=args.image,
        image_pull_policy=args.image_pull_policy,
        mode=args.mode,
        exclude_ports=tuple(args.exclude_outbound_ports),
        exclude_cidrs=tuple(args.exclude_outbound_cidrs),
        llm_hosts=tuple(args.llm_host),
        resources=options.Resources(
            args.proxy_cpu, args.proxy_memory, args.proxy_cpu_limit, args.proxy_memory_limit
        ),
        prices_configmap=args.prices_configmap,
        cost_labels=dict(args.cost_label),
    )
    return handlers.Settings(defaults=defaults, namespace=args.namespace)


def _api_client() -> object:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


async def operate(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    cluster = Cluster(_api_client())
    registry = kopf.OperatorRegistry()
    handlers.register(registry, cluster, settings)

    host = args.webhook_host or (
        "127.0.0.1" if args.webhook_listen in ("0.0.0.0", "") else args.webhook_listen
    )
    service = None
    hosts = [host, "localhost", "127.0.0.1"]
    if args.webhook_service is not None:
        name, port = args.webhook_service
        service = serving.ServiceRef(settings.namespace, name, port)
        hosts = [f"{name}.{settings.namespace}.svc", f"{name}.{settings.namespace}.svc.cluster.local", *hosts]
    ca, cert, key = serving.certificate_files(args.webhook_cert_dir, hosts)
    inner = kopf.WebhookServer(addr=args.webhook_listen, port=args.webhook_port, host=host,
                               cafile=ca, certfile=cert, pkeyfile=key, file_check_interval=10.0)  # fmt: skip
    register = (
        serving.webhook_registrar(cluster, settings.skip_namespaces, args.webhook_timeout)
        if args.register_webhook
        else None
    )
    webhook_server = serving.RegisteringWebhookServer(inner, register, service)

    operator_settings = kopf.OperatorSettings()
    operator_settings.admission.server = webhook_server
    operator_settings.admission.managed = None
    operator_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="spendmeter.io")
    operator_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="spendmeter.io")
    operator_settings.posting.enabled = False  # kopf's own per-handler events would be noise

    ready = asyncio.Event()
    tasks = []
    if args.health_port:
        is_ready = lambda: ready.is_set() and webhook_server.serving.is_set()  # noqa: E731
        tasks.append(asyncio.create_task(serving.serve_health("0.0.0.0", args.health_port, is_ready)))
    try:
        await kopf.operator(
            registry=registry,
            settings=operator_settings,
            clusterwide=True,
            standalone=args.standalone,
            peering_name=None if args.standalone else args.peering,
            priority=args.priority,
            ready_flag=ready,
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(operate(args))
    return 0
