"""What an injection needs to know: the operator's defaults and a pod's own choices, read from annotations.

The operator's configuration (set by the chart through command-line options) gives the defaults; a pod's
``spendmeter.io/*`` annotations override them for that pod. Every annotation value is read by a pure
``parse_*`` function that raises ValueError with a message naming the annotation, so a typo is reported
(as an admission warning and an event) instead of silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from spendmeter_proxy import rules
from spendmeter_proxy.routes import HostRule, parse_host_spec

GROUP = "spendmeter.io"
INJECT = f"{GROUP}/inject"  # pod annotation "true"/"false"; namespace label "enabled"
STATUS = f"{GROUP}/status"  # set on injected pods; injection is skipped when present
MODE = f"{GROUP}/mode"  # "transparent" (default) or "explicit"
EXCLUDE_PORTS = f"{GROUP}/exclude-outbound-ports"  # "5432,6379"
EXCLUDE_CIDRS = f"{GROUP}/exclude-outbound-cidrs"  # "10.0.0.0/8,fd00::/8"
LLM_HOSTS = f"{GROUP}/llm-hosts"  # "gateway.corp:8443=openai,llm.internal=anthropic"
PROXY_CPU = f"{GROUP}/proxy-cpu"  # the sidecar's CPU request
PROXY_MEMORY = f"{GROUP}/proxy-memory"  # the sidecar's memory request
PROXY_CPU_LIMIT = f"{GROUP}/proxy-cpu-limit"
PROXY_MEMORY_LIMIT = f"{GROUP}/proxy-memory-limit"
WARNING = f"{GROUP}/warning"  # set by the injection when something will not be metered
INJECTED_LABEL = f"{GROUP}/injected"  # pod label "true": lets the operator watch injected pods only

NAMESPACE_LABEL_VALUE = "enabled"
NAMESPACE_OPT_OUT_VALUE = "disabled"  # a namespace label that keeps every pod of it out
STATUS_INJECTED = "injected"

PROXY_UID = 15500  # neither Istio's 1337 nor Linkerd's 2102
PROXY_PORT = 15001
METRICS_PORT = 9464
REDIRECT_PORTS = (443,)

Mode = Literal["transparent", "explicit"]
MODES: tuple[Mode, ...] = ("transparent", "explicit")

_QUANTITY = re.compile(r"^(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_ENV_NAME = re.compile(r"[^A-Z0-9]+")


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_request: str = "50m"
    memory_request: str = "64Mi"
    cpu_limit: str | None = None
    memory_limit: str | None = "256Mi"

    def as_spec(self) -> dict[str, dict[str, str]]:
        requests = {"cpu": self.cpu_request, "memory": self.memory_request}
        limits = {k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v is not None}
        return {"requests": requests, "limits": limits} if limits else {"requests": requests}


@dataclass(frozen=True, slots=True)
class Options:
    """Everything one injection depends on besides the pod; the operator's defaults are one instance."""

    image: str = "ghcr.io/spendmeter/spendmeter:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    mode: Mode = "transparent"
    exclude_ports: tuple[int, ...] = ()
    exclude_cidrs: tuple[str, ...] = ()
    llm_hosts: tuple[HostRule, ...] = ()
    resources: Resources = field(default_factory=Resources)
    prices_configmap: str = "spendmeter-prices"
    cost_labels: Mapping[str, str] = field(default_factory=dict)  # pod label key -> cost label name
    proxy_uid: int = PROXY_UID
    scrape_annotations: bool = True  # prometheus.io/scrape, port, path on injected pods

    @property
    def redirect_ports(self) -> tuple[int, ...]:
        """443 and the port of every extra LLM host, which the init step must redirect too."""
        return tuple(sorted({*REDIRECT_PORTS, *(h.port or 443 for h in self.llm_hosts)}))


def parse_mode(text: str) -> Mode:
    value = text.strip().lower()
    for mode in MODES:
        if value == mode:
            return mode
    raise ValueError(f"mode must be one of {', '.join(MODES)} (got {text!r})")


def parse_quantity(text: str) -> str:
    """A Kubernetes resource quantity such as ``100m``, ``0.5`` or ``128Mi``."""
    value = text.strip()
    if not _QUANTITY.match(value):
        raise ValueError(f"not a resource quantity such as 100m or 128Mi (got {text!r})")
    return value


def parse_llm_host(text: str) -> HostRule:
    """``HOST[:PORT]=PROVIDER[/DIALECT]``, e.g. ``gateway.corp:8443=openai``: exactly what the proxy reads."""
    return parse_host_spec(text)


def parse_llm_hosts(text: str) -> tuple[HostRule, ...]:
    return tuple(parse_llm_host(part) for part in text.split(",") if part.strip())


def parse_cidrs(text: str) -> tuple[str, ...]:
    return tuple(str(net) for net in rules.parse_cidrs(text))


def cost_label_env(name: str) -> str:
    """The proxy's variable for a cost label: ``cost-center`` -> ``SPENDMETER_LABEL_COST_CENTER``."""
    return "SPENDMETER_LABEL_" + _ENV_NAME.sub("_", name.upper()).strip("_")


_RESOURCE_FIELDS = {
    PROXY_CPU: "cpu_request",
    PROXY_MEMORY: "memory_request",
    PROXY_CPU_LIMIT: "cpu_limit",
    PROXY_MEMORY_LIMIT: "memory_limit",
}


def pod_options(annotations: Mapping[str, str], defaults: Options) -> Options:
    """``defaults`` with one pod's annotations applied; a bad value is a ValueError naming its annotation."""
    options = defaults
    for key, value in sorted(annotations.items()):
        try:
            options = _apply_annotation(options, key, value)
        except ValueError as exc:
            raise ValueError(f"annotation {key}: {exc}") from None
    return options


def _apply_annotation(options: Options, key: str, value: str) -> Options:
    if key == MODE:
        return replace(options, mode=parse_mode(value))
    if key == EXCLUDE_PORTS:
        return replace(options, exclude_ports=rules.parse_ports(value))
    if key == EXCLUDE_CIDRS:
        return replace(options, exclude_cidrs=parse_cidrs(value))
    if key == LLM_HOSTS:
        return replace(options, llm_hosts=parse_llm_hosts(value))
    if key in _RESOURCE_FIELDS:
        resources = replace(options.resources, **{_RESOURCE_FIELDS[key]: parse_quantity(value)})
        return replace(options, resources=resources)
    return options
