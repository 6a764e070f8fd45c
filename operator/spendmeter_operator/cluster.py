"""Reading and writing the cluster: the few Kubernetes API calls the operator makes besides kopf's own.

The official client is synchronous, so each call runs in a worker thread. Every method returns plain
dicts (the API's JSON) so that the pure modules never see client classes. The owners of ReplicaSets and
Jobs, which the injection asks for at every pod creation, are remembered for a few minutes (a ReplicaSet's
Deployment does not change), so a rollout's pods cost one lookup, not one each.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes

PRICEBOOKS = ("spendmeter.io", "v1alpha1", "pricebooks")
SPENDBUDGETS = ("spendmeter.io", "v1alpha1", "spendbudgets")
_OWNER_READERS = {"ReplicaSet": "read_namespaced_replica_set", "Job": "read_namespaced_job"}
OWNERS_KEPT = 2048  # entries
OWNERS_TTL = 300.0  # seconds


class Cluster:
    def __init__(self, api_client: Any) -> None:
        self._client = api_client
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._apps = kubernetes.client.AppsV1Api(api_client)
        self._batch = kubernetes.client.BatchV1Api(api_client)
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._admission = kubernetes.client.AdmissionregistrationV1Api(api_client)
        self._owners: OrderedDict[tuple[str, str, str], tuple[float, list[dict[str, Any]]]] = OrderedDict()

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        result = await asyncio.to_thread(fn, *args, **kwargs)
        return self._client.sanitize_for_serialization(result)

    async def namespace_labels(self, name: str) -> dict[str, str]:
        try:
            ns = await self._call(self._core.read_namespace, name)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return dict((ns.get("metadata") or {}).get("labels") or {})

    async def owners(self, kind: str, namespace: str, name: str) -> Sequence[Mapping[str, Any]] | None:
        """The owner references of a ReplicaSet or Job, or None when it cannot be read."""
        key = (kind, namespace, name)
        kept = self._owners.get(key)
        if kept is not None and time.monotonic() - kept[0] < OWNERS_TTL:
            return kept[1]
        api = self._apps if kind == "ReplicaSet" else self._batch
        try:
            obj = await self._call(getattr(api, _OWNER_READERS[kind]), name, namespace)
        except (kubernetes.client.ApiException, KeyError):
            return None
        owners = list((obj.get("metadata") or {}).get("ownerReferences") or [])
        self._owners[key] = (time.monotonic(), owners)
        self._owners.move_to_end(key)
        while len(self._owners) > OWNERS_KEPT:
            self._owners.popitem(last=False)
        return owners

    async def warn(self, involved: Mapping[str, str], reason: str, message: str) -> None:
        """A Warning event about ``involved`` (kind, apiVersion, name, namespace)."""
        now = datetime.datetime.now(datetime.UTC)
        event = {
            "metadata": {"generateName": f"{involved['name']}.", "namespace": involved["namespace"]},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": "spendmeter-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._call(self._core.create_namespaced_event, involved["namespace"], event)

    async def pricebooks(self) -> list[dict[str, Any]]:
        result = await self._call(self._custom.list_cluster_custom_object, *PRICEBOOKS)
        return list(result.get("items") or [])

    async def spendbudgets(self) -> list[dict[str, Any]]:
        result = await self._call(self._custom.list_cluster_custom_object, *SPENDBUDGETS)
        return list(result.get("items") or [])

    async def patch_pricebook_status(self, name: str, status: Mapping[str, Any]) -> None:
        patch = {"status": dict(status)}
        await self._call(self._custom.patch_cluster_custom_object_status, *PRICEBOOKS, name, patch)

    async def injected_namespaces(self, label: str) -> set[str]:
        pods = await self._call(self._core.list_pod_for_all_namespaces, label_selector=f"{label}=true")
        return {p["metadata"]["namespace"] for p in pods.get("items") or []}

    async def configmaps(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        result = await self._call(self._core.list_config_map_for_all_namespaces, label_selector=selector)
        return list(result.get("items") or [])

    async def apply_configmap(self, body: Mapping[str, Any], exists: bool) -> None:
        meta = body["metadata"]
        if exists:
            await self._call(self._core.replace_namespaced_config_map, meta["name"], meta["namespace"], body)
        else:
            await self._call(self._core.create_namespaced_config_map, meta["namespace"], body)

    async def delete_configmap(self, namespace: str, name: str) -> None:
        try:
            await self._call(self._core.delete_namespaced_config_map, name, namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise

    async def apply_webhook_configuration(self, body: Mapping[str, Any]) -> None:
        name = body["metadata"]["name"]
        try:
            await self._call(self._admission.create_mutating_webhook_configuration, body)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
            await self._call(self._admission.patch_mutating_webhook_configuration, name, body)
