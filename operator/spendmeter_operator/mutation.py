"""The pod mutation: a pure function from an opted-in pod to the same pod with the metering sidecar.

What the injected pod gets (DESIGN.md "Opt-in and injection"), in order of its init containers:

1. ``spendmeter-init`` (transparent mode only): ``spendmeter init`` writes the iptables redirect of outbound
   TCP 443 (and the ports of extra LLM hosts) to the proxy; it alone has NET_ADMIN and NET_RAW.
2. ``spendmeter-proxy``: the proxy as a native sidecar (an init container with ``restartPolicy: Always``
   and a startup probe on ``/readyz``), so it is listening and has written the CA bundle before any of
   the pod's own containers start, and a Job's pod still completes when its containers exit. It reads
   ``prices.yaml`` and ``budgets.yaml`` from the namespace's ConfigMap, mounted as an optional volume (the
   operator writes it once the namespace has injected pods; until then the proxy has no extra prices and
   no blocks, and the pod starts all the same).
3. The pod's own init containers, then its containers: each gets the CA bundle volume read-only and the
   variables that make common TLS stacks trust it, Java's ``JAVA_TOOL_OPTIONS`` pointing at a PKCS#12
   truststore among them (plus ``HTTPS_PROXY`` in explicit mode).

The result is marked with ``spendmeter.io/status``; a marked pod is returned unchanged, so injecting
twice changes nothing. The admission patch is the difference between the two pods (kopf computes it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from spendmeter_operator import options as opts
from spendmeter_operator.workloads import Workload

INIT_CONTAINER = "spendmeter-init"
PROXY_CONTAINER = "spendmeter-proxy"
CA_VOLUME = "spendmeter-ca"
PRICES_VOLUME = "spendmeter-prices"
CA_DIR = "/var/run/spendmeter/ca"
CA_CERT = f"{CA_DIR}/ca.pem"  # the proxy's CA alone
CA_BUNDLE = f"{CA_DIR}/ca-bundle.pem"  # the system CAs and the proxy's CA
PRICES_DIR = "/etc/spendmeter/prices"
PRICES_FILE = f"{PRICES_DIR}/prices.yaml"
BUDGETS_FILE = f"{PRICES_DIR}/budgets.yaml"  # the SpendBudget blocks, from the same ConfigMap
METRICS_PORT_NAME = "spendmeter"

# Where common TLS stacks look for trusted CAs. Node adds NODE_EXTRA_CA_CERTS to its own roots, so it gets
# the proxy's CA alone; every other variable replaces the roots and so gets the whole bundle.
TRUST_ENV: dict[str, str] = {
    "SSL_CERT_FILE": CA_BUNDLE,
    "REQUESTS_CA_BUNDLE": CA_BUNDLE,
    "NODE_EXTRA_CA_CERTS": CA_CERT,
    "CURL_CA_BUNDLE": CA_BUNDLE,
    "AWS_CA_BUNDLE": CA_BUNDLE,
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": CA_BUNDLE,
}
TRUSTSTORE = f"{CA_DIR}/truststore.p12"  # the same certificates for Java, password "changeit"
# Java reads no CA variable; JAVA_TOOL_OPTIONS reaches every JVM. The pod's own options are kept after ours.
JAVA_TRUST = (
    f"-Djavax.net.ssl.trustStore={TRUSTSTORE} -Djavax.net.ssl.trustStoreType=PKCS12 "
    "-Djavax.net.ssl.trustStorePassword=changeit"
)
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(opts.METRICS_PORT),
    "prometheus.io/path": "/metrics",
}
INIT_RESOURCES = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}


@dataclass(frozen=True, slots=True)
class Decision:
    inject: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Injection:
    pod: dict[str, Any]
    warnings: tuple[str, ...]


def decide(
    pod: Mapping[str, Any], namespace_labels: Mapping[str, str], skip_namespaces: frozenset[str]
) -> Decision:
    """Whether ``pod`` is to be injected: its annotation, else its namespace's label, decides."""
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if meta.get("namespace") in skip_namespaces:
        return Decision(False, f"namespace {meta.get('namespace')} is never injected")
    if opts.STATUS in annotations:
        return Decision(False, "already injected")
    if (pod.get("spec") or {}).get("hostNetwork"):
        return Decision(False, "the pod uses the node's network, which must not be redirected")
    if namespace_labels.get(opts.INJECT) == opts.NAMESPACE_OPT_OUT_VALUE:
        return Decision(False, f"the namespace opts out ({opts.INJECT}={opts.NAMESPACE_OPT_OUT_VALUE})")
    choice = str(annotations.get(opts.INJECT, "")).strip().lower()
    if choice == "false":
        return Decision(False, f"the pod opts out ({opts.INJECT}: false)")
    if choice == "true":
        return Decision(True, f"the pod opts in ({opts.INJECT}: true)")
    if namespace_labels.get(opts.INJECT) == opts.NAMESPACE_LABEL_VALUE:
        return Decision(True, f"the namespace opts in ({opts.INJECT}={opts.NAMESPACE_LABEL_VALUE})")
    return Decision(False, "not opted in")


def inject(pod: Mapping[str, Any], options: opts.Options, workload: Workload) -> Injection:
    """The injected copy of ``pod`` (``pod`` itself is not changed), and warnings for the pod's owner."""
    new: dict[str, Any] = copy.deepcopy(dict(pod))
    meta = new.setdefault("metadata", {})
    annotations = meta.get("annotations") or {}
    if opts.STATUS in annotations:
        return Injection(new, ())
    spec = new.setdefault("spec", {})
    warnings = _uid_warnings(spec, options.proxy_uid) if options.mode == "transparent" else ()

    app_env = _app_env(options)
    own_init = [_as_app_container(c, app_env) for c in spec.get("initContainers") or ()]
    spec["containers"] = [_as_app_container(c, app_env) for c in spec.get("containers") or ()]
    sidecars = [_init_container(options)] if options.mode == "transparent" else []
    sidecars.append(_proxy_container(options, workload, meta.get("labels") or {}))
    spec["initContainers"] = sidecars + own_init
    spec["volumes"] = [
        *(v for v in spec.get("volumes") or () if v.get("name") not in (CA_VOLUME, PRICES_VOLUME)),
        {"name": CA_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
        {"name": PRICES_VOLUME, "configMap": {"name": options.prices_configmap, "optional": True}},
    ]
    meta["annotations"] = {**annotations, opts.STATUS: opts.STATUS_INJECTED}
    # For Prometheus setups that discover targets by annotation; a pod that already has its own scrape
    # annotations (its app's metrics) keeps them: the chart's PodMonitor finds the sidecar then.
    if options.scrape_annotations and "prometheus.io/scrape" not in annotations:
        meta["annotations"].update(SCRAPE_ANNOTATIONS)
    meta["labels"] = {**(meta.get("labels") or {}), opts.INJECTED_LABEL: "true"}
    if warnings:
        meta["annotations"][opts.WARNING] = "; ".join(warnings)
    return Injection(new, warnings)


def _app_env(options: opts.Options) -> list[dict[str, Any]]:
    env = [{"name": name, "value": value} for name, value in TRUST_ENV.items()]
    if options.mode == "explicit":
        url = f"http://127.0.0.1:{opts.PROXY_PORT}"
        env += [{"name": "HTTPS_PROXY", "value": url}, {"name": "https_proxy", "value": url}]
    return env


def _as_app_container(container: Mapping[str, Any], env: list[dict[str, Any]]) -> dict[str, Any]:
    """The container with the CA volume (read-only) and trust variables; its own same-named ones give way."""
    new = dict(container)
    ours = {e["name"] for e in env}
    own = [e for e in container.get("env") or () if e.get("name") not in ours]
    java = next((e for e in own if e.get("name") == "JAVA_TOOL_OPTIONS"), None)
    if java is None:
        own.append({"name": "JAVA_TOOL_OPTIONS", "value": JAVA_TRUST})
    elif "value" in java and "valueFrom" not in java:
        java.update(value=f"{JAVA_TRUST} {java['value']}".strip())
    new["env"] = copy.deepcopy(own) + copy.deepcopy(env)
    mounts = [m for m in container.get("volumeMounts") or () if m.get("name") != CA_VOLUME]
    new["volumeMounts"] = [*mounts, {"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": True}]
    return new


def _init_container(options: opts.Options) -> dict[str, Any]:
    args = ["init", "--proxy-uid", str(options.proxy_uid), "--proxy-port", str(opts.PROXY_PORT)]
    args += ["--ports", ",".join(map(str, options.redirect_ports))]
    if options.exclude_cidrs:
        args += ["--exclude-cidrs", ",".join(options.exclude_cidrs)]
    if options.exclude_ports:
        args += ["--exclude-ports", ",".join(map(str, options.exclude_ports))]
    return {
        "name": INIT_CONTAINER,
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "args": args,
        "resources": copy.deepcopy(INIT_RESOURCES),
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }


def _proxy_container(options: opts.Options, workload: Workload, labels: Mapping[str, str]) -> dict[str, Any]:
    args = ["proxy", "--mode", options.mode, "--listen-port", str(opts.PROXY_PORT)]
    args += ["--metrics-port", str(opts.METRICS_PORT), "--ca-dir", CA_DIR, "--prices", PRICES_FILE]
    args += ["--budgets", BUDGETS_FILE]
    for host in options.llm_hosts:
        args += ["--llm-host", host.spec()]
    env: list[dict[str, Any]] = [
        {"name": "SPENDMETER_WORKLOAD", "value": workload.name},
        {"name": "SPENDMETER_WORKLOAD_KIND", "value": workload.kind},
        {"name": "SPENDMETER_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SPENDMETER_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    env += [
        {"name": opts.cost_label_env(name), "value": labels[key]}
        for key, name in sorted(options.cost_labels.items())
        if key in labels
    ]
    return {
        "name": PROXY_CONTAINER,
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "restartPolicy": "Always",
        "args": args,
        "env": env,
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": opts.METRICS_PORT, "protocol": "TCP"}],
        "startupProbe": _readyz_probe(period_seconds=1, failure_threshold=120),
        "readinessProbe": _readyz_probe(period_seconds=10, failure_threshold=3),
        "resources": options.resources.as_spec(),
        "securityContext": {
            "runAsUser": options.proxy_uid,
            "runAsGroup": options.proxy_uid,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": CA_VOLUME, "mountPath": CA_DIR},
            {"name": PRICES_VOLUME, "mountPath": PRICES_DIR, "readOnly": True},
        ],
    }


def _readyz_probe(period_seconds: int, failure_threshold: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/readyz", "port": opts.METRICS_PORT},
        "periodSeconds": period_seconds,
        "failureThreshold": failure_threshold,
    }


def _uid_warnings(spec: Mapping[str, Any], proxy_uid: int) -> tuple[str, ...]:
    """Containers that run as the proxy's UID: the redirect exempts that UID, so they go unmetered."""
    pod_uid = (spec.get("securityContext") or {}).get("runAsUser")
    return tuple(
        f"container {c.get('name')} runs as the proxy's UID {proxy_uid}, so its calls bypass the proxy"
        for c in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]
        if (c.get("securityContext") or {}).get("runAsUser", pod_uid) == proxy_uid
    )


def transform_to(new: Mapping[str, Any]) -> Callable[[MutableMapping[str, Any]], None]:
    """A function that turns a body into ``new`` in place: a kopf patch function, whose JSON patch kopf
    then computes as the difference between the pod it was sent and this one."""

    def transform(body: MutableMapping[str, Any]) -> None:
        body.clear()
        body.update(copy.deepcopy(dict(new)))

    return transform
