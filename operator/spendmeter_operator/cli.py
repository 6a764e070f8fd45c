"""``spendmeter operator``: run the operator (admission webhook, PriceBook prices, SpendBudgets, health
endpoints and the budgets' metrics).

The chart passes the injection defaults as options; each pod's ``spendmeter.io/*`` annotations override
them. Replicas elect one leader through kopf peering (a ClusterKopfPeering named by ``--peering``); every
replica serves the webhook, only the leader writes ConfigMaps and PriceBook statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import socket
import zlib
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import prometheus_client
from spendmeter_proxy import rules
from spendmeter_proxy.cli import argument_type

from spendmeter_operator import handlers, options, serving, watching, webhooks
from spendmeter_operator.cluster import Cluster
from spendmeter_operator.metrics import BudgetMetrics


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


def parse_interval(text: str) -> float:
    """A number of seconds, at least 1."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds (got {text!r})") from None
    if not value >= 1:
        raise ValueError(f"an interval is at least 1 second (got {text!r})")
    return value


def host_priority(hostname: str) -> int:
    """A peering priority from the pod's name (its hostname): replicas of one Deployment get different ones,
    so exactly one of them leads instead of all pausing on a tie."""
    return zlib.crc32(hostname.encode()) % 1_000_000 + 1


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
    inject.add_argument("--mode", type=argument_type(options.parse_mode), default=d.mode)
    inject.add_argument(
        "--exclude-outbound-ports", type=argument_type(rules.parse_ports), default=(), metavar="P,..."
    )
    inject.add_argument(
        "--exclude-outbound-cidrs", type=argument_type(options.parse_cidrs), default=(), metavar="CIDR,..."
    )
    inject.add_argument(
        "--llm-host",
        type=argument_type(options.parse_llm_host),
        action="append",
        default=[],
        metavar="HOST[:PORT]=PROVIDER",
        help="an extra LLM API host for every proxy (repeatable)",
    )
    inject.add_argument(
        "--cost-label",
        type=argument_type(parse_cost_label),
        action="append",
        default=[],
        metavar="POD_LABEL[=NAME]",
        help="a pod label exported as a cost label (repeatable)",
    )
    inject.add_argument("--proxy-cpu", type=argument_type(options.parse_quantity), default=r.cpu_request)
    inject.add_argument(
        "--proxy-memory", type=argument_type(options.parse_quantity), default=r.memory_request
    )
    inject.add_argument("--proxy-cpu-limit", type=argument_type(options.parse_quantity), default=r.cpu_limit)
    inject.add_argument(
        "--proxy-memory-limit", type=argument_type(options.parse_quantity), default=r.memory_limit
    )
    inject.add_argument(
        "--proxy-uid",
        type=argument_type(rules.parse_uid),
        default=d.proxy_uid,
        help="the proxy's UID, exempt from the redirect (default %(default)s: neither Istio's nor Linkerd's)",
    )
    inject.add_argument(
        "--scrape-annotations",
        action=argparse.BooleanOptionalAction,
        default=d.scrape_annotations,
        help="put prometheus.io/scrape, port and path on injected pods (annotation-based Prometheus setups)",
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
        type=argument_type(parse_service),
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
    budget = parser.add_argument_group("SpendBudgets")
    budget.add_argument(
        "--prometheus-url",
        default=env("SPENDMETER_PROMETHEUS_URL"),
        help="Prometheus's HTTP API, where budgets read spend (without it budgets are not evaluated)",
    )
    budget.add_argument(
        "--budget-interval",
        type=argument_type(parse_interval),
        default=60.0,
        metavar="SECONDS",
        help="time between two evaluations of a budget (default: %(default)s)",
    )
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--health-port", type=int, default=8080, help="/healthz and /readyz (0: none)")
    run_group.add_argument(
        "--peering", default="spendmeter", help="ClusterKopfPeering name (default: %(default)s)"
    )
    run_group.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; the highest leads (default: derived from the pod name, so replicas differ)",
    )
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
        proxy_uid=args.proxy_uid,
        scrape_annotations=args.scrape_annotations,
    )
    return handlers.Settings(
        defaults=defaults,
        namespace=args.namespace,
        prometheus_url=args.prometheus_url or None,
        budget_interval=args.budget_interval,
    )


def _api_client() -> Any:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


async def operate(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    api_client = _api_client()
    cluster = Cluster(api_client)
    namespace_labels = watching.NamespaceLabels(api_client, cluster.namespace_labels)
    registry = kopf.OperatorRegistry()
    metrics_registry = prometheus_client.CollectorRegistry()
    metrics = BudgetMetrics(metrics_registry)
    handlers.register(registry, cluster, settings, namespace_labels.get, metrics)

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
    operator_settings.persistence.finalizer = "spendmeter.io/finalizer"  # kopf's, while a budget's timer runs
    operator_settings.posting.enabled = False  # kopf's own per-handler events would be noise
    operator_settings.batching.idle_timeout = 0.5  # a per-object worker need not outlive its event long
    # Watch only the objects the handlers are about (server-side), not every pod and ConfigMap of the cluster.
    for resource, labels in handlers.WATCHED_LABELS.items():
        operator_settings.watching.label_selectors[resource] = ",".join(f"{k}={v}" for k, v in labels.items())

    namespace_labels.start()
    gc.collect()
    gc.freeze()  # the long-lived objects of start-up (modules, clients) leave the collector's generations
    ready = asyncio.Event()
    tasks = []
    if args.health_port:
        is_ready = lambda: ready.is_set() and webhook_server.serving.is_set()  # noqa: E731
        tasks.append(
            asyncio.create_task(serving.serve_health("0.0.0.0", args.health_port, is_ready, metrics_registry))
        )
    try:
        await kopf.operator(
            registry=registry,
            settings=operator_settings,
            clusterwide=True,
            standalone=args.standalone,
            peering_name=None if args.standalone else args.peering,
            priority=args.priority if args.priority is not None else host_priority(socket.gethostname()),
            ready_flag=ready,
        )
    finally:
        namespace_labels.stop()
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
