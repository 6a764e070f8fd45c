"""The proxy's Prometheus metrics (DESIGN.md "Metrics"), built on a registry passed in.

Every LLM series carries the workload labels (``workload``, ``workload_kind`` and the cost labels the chart
maps from pod labels); namespace and pod come from Prometheus's own target labels. Label values are
bounded: model names beyond a cap fold into ``other`` so that a client sending random model names cannot
blow up the series count.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from spendmeter_proxy.usage import Usage

OTHER = "other"
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


def label_name(raw: str) -> str:
    """A Prometheus label name from a pod label or an environment suffix (``cost-center`` -> ``cost_center``)."""
    name = _LABEL_NAME.sub("_", raw.strip().lower())
    if not name or name[0].isdigit():
        name = "_" + name
    return name


@dataclass
class BoundedValues:
    """Admits at most ``cap`` distinct values for a label; later newcomers read as ``other``."""

    cap: int
    max_length: int = 120
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, value: str | None) -> str:
        if not value:
            return "unknown"
        value = value[: self.max_length]
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self.cap:
                return OTHER
            self._seen.add(value)
        return value


class Metrics:
    """All spendmeter series, registered on ``registry``.

    ``workload`` holds the constant workload labels of this pod: ``{"workload": ..., "workload_kind": ...,
    "team": ...}``. Methods take already-bounded label values; use :attr:`model` to bound a model name.
    """

    def __init__(
        self, registry: CollectorRegistry, workload: Mapping[str, str], model_cap: int = 200
    ) -> None:
        self.workload = dict(workload)
        self._wl_values = tuple(self.workload.values())
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}  # bounded: every label value is
        self.model = BoundedValues(model_cap)
        wl = list(self.workload)

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, wl + labels, registry=registry)

        self.requests = counter(
            "spendmeter_requests",
            "LLM API calls seen by the proxy, by answer status (2xx, 4xx, 5xx, error).",
            ["provider", "operation", "model", "status"],
        )
        self.tokens = counter(
            "spendmeter_tokens",
            "Tokens billed, by type (cached_input and cache_write are part of input; reasoning of output).",
            ["provider", "model", "type"],
        )
        self.cost = counter("spendmeter_cost_usd", "Spend in USD.", ["provider", "model"])
        self.wasted = counter(
            "spendmeter_wasted_cost_usd",
            "Spend in USD on calls that produced nothing new: duplicates of answered calls, failed attempts "
            "that were retried.",
            ["provider", "model", "reason"],
        )
        self.retries = counter(
            "spendmeter_retries", "Calls that retried an earlier call.", ["provider", "model"]
        )
        self.unpriced = counter(
            "spendmeter_unpriced_requests",
            "Calls with usage but no known price for the model.",
            ["provider", "model"],
        )
        self.duration = Histogram(
            "spendmeter_request_duration_seconds",
            "Time from the request leaving the app to the last byte of the answer.",
            [*wl, "provider", "model", "stream"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "spendmeter_time_to_first_token_seconds",
            "Time from the request to the first chunk of a streamed answer.",
            [*wl, "provider", "model"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.blocked = counter(
            "spendmeter_blocked_requests",
            "Calls answered by the proxy because a budget blocks them.",
            ["provider"],
        )
        self.errors = Counter(
            "spendmeter_proxy_errors",
            "Internal errors of the metering code, by kind; the app's traffic is never affected.",
            ["kind"],
            registry=registry,
        )

    def _child(self, metric: Any, *values: str) -> Any:
        """The series of ``metric`` for these label values (after the workload's), looked up once."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*self._wl_values, *values)
        return child

    def observe_call(
        self,
        *,
        provider: str,
        operation: str,
        model: str,
        status: str,
        stream: bool,
        usage: Usage | None,
        cost_usd: float | None,
        duration_s: float | None,
        ttft_s: float | None,
    ) -> None:
        """Record one finished LLM call."""
        self._child(self.requests, provider, operation, model, status).inc()
        if usage is not None:
            for kind, count in usage.by_type().items():
                if count:
                    self._child(self.tokens, provider, model, kind).inc(count)
            if cost_usd is None:
                self._child(self.unpriced, provider, model).inc()
        if cost_usd:
            self._child(self.cost, provider, model).inc(cost_usd)
        if duration_s is not None:
            self._child(self.duration, provider, model, "true" if stream else "false").observe(duration_s)
        if ttft_s is not None:
            self._child(self.ttft, provider, model).observe(ttft_s)

    def observe_waste(self, *, provider: str, model: str, reason: str, cost_usd: float) -> None:
        self._child(self.wasted, provider, model, reason).inc(cost_usd)

    def observe_retry(self, *, provider: str, model: str) -> None:
        self._child(self.retries, provider, model).inc()

    def observe_blocked(self, *, provider: str) -> None:
        self._child(self.blocked, provider).inc()
