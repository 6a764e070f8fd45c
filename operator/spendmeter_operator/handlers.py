"""The kopf handlers: the pod injection webhook, the per-namespace ConfigMap of the sidecars'
configuration (PriceBooks -> ``prices.yaml``, SpendBudget blocks -> ``budgets.yaml``), and the evaluation
of SpendBudgets on a timer.

`register` adds them to the registry it is given (never kopf's global one), bound to one `Cluster` and
one `Settings`, so tests and the benchmark can run several operators in one process.

ConfigMaps: every change to a PriceBook, to an injected pod's existence, to one of the operator's
ConfigMaps or to the blocks in force triggers one reconciliation, which reads the cluster as it is (the
books, the namespaces with injected pods, the existing ConfigMaps), then writes the differences. Runs that
would overlap are merged into one. Every namespace with injected pods gets the ConfigMap, with no book
and no block as well, so the sidecars always find both files. Handlers only run while this replica leads
(kopf peering), so two replicas never both write.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping, MutableSequence
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import CollectorRegistry

from spendmeter_operator import budgets, conditions, mutation, options, prices, webhooks, workloads
from spendmeter_operator.budgeting import BudgetEvaluator
from spendmeter_operator.cluster import Cluster
from spendmeter_operator.metrics import BudgetMetrics
from spendmeter_operator.querying import Prometheus
from spendmeter_operator.watching import LabelsFetcher

logger = logging.getLogger(__name__)


INJECTED_PODS = {options.INJECTED_LABEL: "true"}
WATCHED_LABELS: dict[tuple[str, str], Mapping[str, str]] = {
    ("v1", "pods"): INJECTED_PODS,
    ("v1", "configmaps"): prices.MANAGED_LABELS,
}
"""The labels of the only pods and ConfigMaps the handlers are about: the operator tells kopf to watch
just these (a server-side label selector), so pod creations elsewhere in the cluster cost it nothing."""


@dataclass(frozen=True, slots=True)
class Settings:
    defaults: options.Options = field(default_factory=options.Options)
    namespace: str = "spendmeter-system"  # the operator's own, never injected
    prometheus_url: str | None = None  # where SpendBudgets read spend; None: they are not evaluated
    budget_interval: float = 60.0  # seconds between two evaluations of a SpendBudget

    @property
    def skip_namespaces(self) -> frozenset[str]:
        return frozenset({self.namespace, "kube-system"})


class ConfigReconciler:
    """Keeps one ConfigMap of the effective prices and the namespace's budget blocks in each namespace
    with injected pods, and no other."""

    def __init__(self, cluster: Cluster, configmap_name: str) -> None:
        self.cluster = cluster
        self.configmap_name = configmap_name
        self.last_good: dict[str, Mapping[str, Any]] = {}
        self.blocks: dict[str, dict[str, Mapping[str, Any]]] = {}  # namespace -> budget -> block entry
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

    def set_block(self, namespace: str, budget: str, entry: Mapping[str, Any] | None) -> bool:
        """Put (or with None, lift) a budget's block; True when that changes what the sidecars read. The
        spend it names is the one when the block began: a block that only saw more spend is left as is."""
        blocks = self.blocks.setdefault(namespace, {})
        current = blocks.get(budget)
        if entry is None:
            return blocks.pop(budget, None) is not None
        if current is not None and {**current, "spentUsd": None} == {**entry, "spentUsd": None}:
            return False
        blocks[budget] = dict(entry)
        return True

    def _restore(self, existing: Mapping[str, Mapping[str, Any]], budget_names: set[str]) -> None:
        """After a restart, the files in force hold the last valid books and the blocks (of budgets that
        still exist) until their budgets are evaluated again."""
        for namespace, cm in existing.items():
            data = cm.get("data") or {}
            for name, spec in prices.parse_rendered(data.get(prices.CONFIGMAP_KEY, "")).items():
                self.last_good.setdefault(name, spec)
            try:
                entries = budgets.parse_rendered_blocks(data.get(budgets.BLOCKS_KEY, ""), namespace)
            except ValueError as exc:
                logger.warning(
                    "Ignoring the blocks in ConfigMap %s/%s: %s", namespace, self.configmap_name, exc
                )
                continue
            for entry in entries:
                if str(entry["budget"]) in budget_names:
                    self.blocks.setdefault(namespace, {}).setdefault(str(entry["budget"]), entry)

    async def _reconcile(self) -> None:
        existing = {
            cm["metadata"]["namespace"]: cm
            for cm in await self.cluster.configmaps(prices.MANAGED_LABELS)
            if cm["metadata"]["name"] == self.configmap_name
        }
        if not self._restored:
            self._restore(existing, {budgets.parse_key(b) for b in await self.cluster.spendbudgets()})
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
        now = datetime.datetime.now(datetime.UTC)
        for namespace in sorted(wanted):
            current = existing.get(namespace)
            blocks = budgets.render_blocks((self.blocks.get(namespace) or {}).values(), now)
            data = {prices.CONFIGMAP_KEY: text, budgets.BLOCKS_KEY: blocks}
            if current is None or (current.get("data") or {}) != data:
                body = prices.configmap(self.configmap_name, namespace, data)
                await self.cluster.apply_configmap(body, exists=current is not None)
                logger.info(
                    "Prices written to ConfigMap %s/%s (with its budget blocks).",
                    namespace,
                    self.configmap_name,
                )
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
            new = [prices.condition(error, book.name in in_force, book.generation, now)]
            old = (body.get("status") or {}).get("conditions") or ()
            if conditions.unchanged(old, new):
                continue
            await self.cluster.patch_pricebook_status(book.name, {"conditions": conditions.settled(old, new)})
            if error is not None:
                logger.warning("PriceBook %s is invalid: %s", book.name, error)


def register(
    registry: kopf.OperatorRegistry,
    cluster: Cluster,
    settings: Settings,
    namespace_labels: LabelsFetcher | None = None,
    metrics: BudgetMetrics | None = None,
) -> ConfigReconciler:
    """Add the operator's handlers to ``registry``; returns the ConfigMap reconciler they share.

    ``namespace_labels`` answers the injection's question about a pod's namespace (by default, the API
    is asked each time; the operator passes `watching.NamespaceLabels.get`, a watched copy). ``metrics``
    receives each budget's evaluation (the operator's registry serves them on /metrics).
    """
    labels_of = namespace_labels or cluster.namespace_labels
    reconciler = ConfigReconciler(cluster, settings.defaults.prices_configmap)
    prometheus = Prometheus(settings.prometheus_url, timeout=10.0) if settings.prometheus_url else None
    evaluator = BudgetEvaluator(prometheus, reconciler, metrics or BudgetMetrics(CollectorRegistry()))

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
        labels = await labels_of(namespace) if namespace else {}
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

    @kopf.on.event("v1", "pods", labels=INJECTED_PODS, registry=registry)
    async def injected_pod_changed(type: str | None, namespace: str | None, **_: Any) -> None:
        if type == "DELETED" or namespace not in reconciler.namespaces:
            await reconciler.trigger()

    @kopf.on.event("v1", "configmaps", labels=prices.MANAGED_LABELS, registry=registry)
    async def prices_configmap_changed(type: str | None, **_: Any) -> None:
        if type is not None:  # the initial listing is already covered by the books' own
            await reconciler.trigger()

    @kopf.timer(budgets.GROUP, budgets.VERSION, budgets.PLURAL, interval=settings.budget_interval,
                registry=registry)  # fmt: skip
    async def evaluate_budget(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        status = await evaluator.evaluate(body)
        patch.status.update(status)

    @kopf.on.event(budgets.GROUP, budgets.VERSION, budgets.PLURAL, registry=registry)
    async def budget_changed(type: str | None, name: str | None, namespace: str | None, **_: Any) -> None:
        if type == "DELETED" and name and namespace:
            await evaluator.forget(namespace, name)

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
