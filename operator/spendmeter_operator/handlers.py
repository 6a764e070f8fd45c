"""The kopf handlers: the pod injection webhook and the PriceBook -> ConfigMap reconciliation.

`register` adds them to the registry it is given (never kopf's global one), bound to one `Cluster` and
one `Settings`, so tests and the benchmark can run several operators in one process.

Prices: every change to a PriceBook, to an injected pod's existence or to one of the operator's ConfigMaps
triggers one reconciliation, which reads the cluster as it is (the books, the namespaces with injected pods,
the existing ConfigMaps), then writes the differences. Runs that would overlap are merged into one.
Handlers only run while this replica leads (kopf peering), so two replicas never both write.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping, MutableSequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from spendmeter_operator import mutation, options, prices, webhooks, workloads
from spendmeter_operator.cluster import Cluster

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settings:
    defaults: options.Options = field(default_factory=options.Options)
    namespace: str = "spendmeter-system"  # the operator's own, never injected

    @property
    def skip_namespaces(self) -> frozenset[str]:
        return frozenset({self.namespace, "kube-system"})


class PriceReconciler:
    """Keeps one ConfigMap of the effective prices in each namespace with injected pods, and no other."""

    def __init__(self, cluster: Cluster, configmap_name: str) -> None:
        self.cluster = cluster
        self.configmap_name = configmap_name
        self.last_good: dict[str, Mapping[str, Any]] = {}
        self.namespaces: set[str] = set()  # where the ConfigMap was last written
        self._restored = False
        self._lock = asyncio.Lock()
        self._pending = False

    async def trigger(self) -> None:
        """Reconcile now, or (if a run is in progress) once more right after it."""
        if self._lock.locked():
            self._pending = True
            return
        async with self._lock:
            self._pending = True
            while self._pending:
                self._pending = False
                await self._reconcile()

    async def _reconcile(self) -> None:
        existing = {
            cm["metadata"]["namespace"]: cm
            for cm in await self.cluster.configmaps(prices.MANAGED_LABELS)
            if cm["metadata"]["name"] == self.configmap_name
        }
        if not self._restored:  # after a restart, the file in force holds the last valid books
            for cm in existing.values():
                text = (cm.get("data") or {}).get(prices.CONFIGMAP_KEY, "")
                for name, spec in prices.parse_rendered(text).items():
                    self.last_good.setdefault(name, spec)
            self._restored = True
        bodies = await self.cluster.pricebooks()
        books = [prices.Book.from_body(b) for b in bodies]
        result = prices.effective(books, self.last_good)
        for name, spec in result.specs:
            if name not in result.errors:
                self.last_good[name] = spec
        await self._report(bodies, result)

        text = prices.render(result.specs)
        wanted = await self.cluster.injected_namespaces(options.INJECTED_LABEL)
        for namespace in sorted(wanted):
            current = existing.get(namespace)
            if current is None or (current.get("data") or {}).get(prices.CONFIGMAP_KEY) != text:
                body = prices.configmap(self.configmap_name, namespace, text)
                await self.cluster.apply_configmap(body, exists=current is not None)
                logger.info("Prices written to ConfigMap %s/%s.", namespace, self.configmap_name)
        for namespace in sorted(existing.keys() - wanted):
            await self.cluster.delete_configmap(namespace, self.configmap_name)
            logger.info("Prices removed from namespace %s: it has no injected pods.", namespace)
        self.namespaces = wanted

    async def _report(self, bodies: list[dict[str, Any]], result: prices.Effective) -> None:
        in_force = {name for name, _ in result.specs}
        now = datetime.datetime.now(datetime.UTC)
        for body in bodies:
            book = prices.Book.from_body(body)
            error = result.errors.get(book.name)
            new = prices.condition(error, book.name in in_force, book.generation, now)
            conditions = (body.get("status") or {}).get("conditions") or ()
            old: Mapping[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
            if all(old.get(k) == new[k] for k in ("status", "reason", "message", "observedGeneration")):
                continue
            if old.get("status") == new["status"]:
                new["lastTransitionTime"] = old.get("lastTransitionTime", new["lastTransitionTime"])
            await self.cluster.patch_pricebook_status(book.name, {"conditions": [new]})
            if error is not None:
                logger.warning("PriceBook %s is invalid: %s", book.name, error)


def register(registry: kopf.OperatorRegistry, cluster: Cluster, settings: Settings) -> PriceReconciler:
    """Add the operator's handlers to ``registry``; returns the price reconciler they share."""
    reconciler = PriceReconciler(cluster, settings.defaults.prices_configmap)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_via_client(**kwargs)

    @kopf.on.mutate(
        "v1", "pods", id=webhooks.HANDLER_ID, operations=["CREATE"], ignore_failures=True, registry=registry
    )
    async def inject_pod(
        body: kopf.Body, patch: kopf.Patch, warnings: MutableSequence[str], dryrun: bool, **_: Any
    ) -> None:
        pod: dict[str, Any] = {"metadata": dict(body.get("metadata") or {}), **dict(body)}
        namespace = str(pod["metadata"].get("namespace") or "")
        labels = await cluster.namespace_labels(namespace) if namespace else {}
        decision = mutation.decide(pod, labels, settings.skip_namespaces)
        if not decision.inject:
            return
        try:
            pod_options = options.pod_options(pod["metadata"].get("annotations") or {}, settings.defaults)
        except ValueError as exc:
            warnings.append(f"spendmeter: the pod is not metered: {exc}")
            return
        workload = await workloads.resolve_workload(pod, cluster.owners)
        result = mutation.inject(pod, pod_options, workload)
        transform: Any = mutation.transform_to(result.pod)  # kopf types the body it passes as a TypedDict
        patch.fns.append(transform)
        for warning in result.warnings:
            warnings.append(f"spendmeter: {warning}")
        if result.warnings and not dryrun:
            try:
                await cluster.warn(_involved(pod, workload), "RunsAsProxyUID", "; ".join(result.warnings))
            except Exception as exc:  # an event is a courtesy: it must never keep the pod from being created
                logger.warning("Could not record an event about %s: %s", workload, exc)

    @kopf.on.event("spendmeter.io", "v1alpha1", "pricebooks", registry=registry)
    async def pricebook_changed(**_: Any) -> None:
        await reconciler.trigger()

    @kopf.on.event("v1", "pods", labels={options.INJECTED_LABEL: "true"}, registry=registry)
    async def injected_pod_changed(type: str | None, namespace: str | None, **_: Any) -> None:
        if type == "DELETED" or namespace not in reconciler.namespaces:
            await reconciler.trigger()

    @kopf.on.event("v1", "configmaps", labels=prices.MANAGED_LABELS, registry=registry)
    async def prices_configmap_changed(type: str | None, **_: Any) -> None:
        if type is not None:  # the initial listing is already covered by the books' own
            await reconciler.trigger()

    return reconciler


_API_VERSIONS = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
                 "ReplicaSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}  # fmt: skip


def _involved(pod: Mapping[str, Any], workload: workloads.Workload) -> dict[str, str]:
    """What an event about the pod names: the pod once it has a name, else its workload."""
    meta = pod["metadata"]
    if meta.get("name"):
        return {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], **_namespace(meta)}
    api_version = _API_VERSIONS.get(workload.kind, "v1")
    return {"kind": workload.kind, "apiVersion": api_version, "name": workload.name, **_namespace(meta)}


def _namespace(meta: Mapping[str, Any]) -> dict[str, str]:
    return {"namespace": str(meta.get("namespace") or "default")}
