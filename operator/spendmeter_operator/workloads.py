"""Workload identity: the owner a person would name for a pod, the Deployment rather than its ReplicaSet.

The proxy labels every metric with it (``SPENDMETER_WORKLOAD``, ``SPENDMETER_WORKLOAD_KIND``). The owner chain
is followed through the API one controller at a time (ReplicaSet -> Deployment, Job -> CronJob), through a
``fetch_owners`` function the caller supplies; when a lookup fails or is not allowed the names decide
instead (a ReplicaSet named ``<deployment>-<pod-template-hash>``, a Job named ``<cronjob>-<minutes>``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The owners whose own controller is the one a person names, and the kind that controller must have.
PARENT_KINDS: dict[str, tuple[str, str]] = {
    "ReplicaSet": ("apps/v1", "Deployment"),
    "Job": ("batch/v1", "CronJob"),
}
_CRONJOB_JOB = re.compile(r"^(?P<name>.+)-\d{8,}$")  # CronJob jobs are suffixed with the scheduled minute

OwnerFetcher = Callable[[str, str, str], Awaitable[Sequence[Mapping[str, Any]] | None]]
"""``fetch_owners(kind, namespace, name)``: that object's ownerReferences, or None when it cannot be read."""


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str
    name: str


def controller_of(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference marked ``controller: true``, if any."""
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


def pod_name(meta: Mapping[str, Any]) -> str:
    """The pod's name, or its generateName prefix (without the trailing dash) before one is assigned."""
    return str(meta.get("name") or str(meta.get("generateName") or "").rstrip("-") or "unknown")


def named_parent(owner: Workload, labels: Mapping[str, str]) -> Workload:
    """The owner a person would name, guessed from names alone (when the API cannot be asked)."""
    if owner.kind == "ReplicaSet":
        suffix = labels.get("pod-template-hash")
        if suffix and owner.name.endswith(f"-{suffix}"):
            return Workload("Deployment", owner.name[: -len(suffix) - 1])
    if owner.kind == "Job":
        match = _CRONJOB_JOB.match(owner.name)
        if match:
            return Workload("CronJob", match["name"])
    return owner


def parent_from_owners(owner: Workload, owners: Sequence[Mapping[str, Any]]) -> Workload:
    """The owner a person would name, given the owner references of the pod's controller."""
    expected = PARENT_KINDS.get(owner.kind)
    parent = controller_of({"ownerReferences": owners})
    if expected is not None and parent is not None and parent.get("kind") == expected[1]:
        return Workload(str(parent["kind"]), str(parent["name"]))
    return owner


async def resolve_workload(pod: Mapping[str, Any], fetch_owners: OwnerFetcher) -> Workload:
    """The workload of ``pod``: its controller's controller where that is the usual parent, else the
    controller, else the pod itself."""
    meta = pod.get("metadata") or {}
    ref = controller_of(meta)
    if ref is None:
        return Workload("Pod", pod_name(meta))
    owner = Workload(str(ref["kind"]), str(ref["name"]))
    if owner.kind not in PARENT_KINDS or str(ref.get("apiVersion")) != PARENT_KINDS[owner.kind][0]:
        return owner
    owners = await fetch_owners(owner.kind, str(meta.get("namespace") or ""), owner.name)
    if owners is None:
        return named_parent(owner, meta.get("labels") or {})
    return parent_from_owners(owner, owners)
