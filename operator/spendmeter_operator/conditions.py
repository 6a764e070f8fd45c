"""Status conditions in the Kubernetes conventions (type, status, reason, message, observedGeneration,
lastTransitionTime), shared by every resource whose status the operator writes. Pure: no I/O."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

_COMPARED = ("status", "reason", "message", "observedGeneration")


def timestamp(when: datetime.datetime) -> str:
    """RFC 3339 in UTC, to the second, as the API server writes times."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, ok: bool, reason: str, message: str, generation: int, now: datetime.datetime
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": timestamp(now),
    }


def settled(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``new``, each keeping the old ``lastTransitionTime`` of its type when its status did not change."""
    previous = {c.get("type"): c for c in old}
    result = []
    for cond in new:
        before = previous.get(cond["type"])
        kept = dict(cond)
        if before is not None and before.get("status") == cond["status"]:
            kept["lastTransitionTime"] = before.get("lastTransitionTime", cond["lastTransitionTime"])
        result.append(kept)
    return result


def unchanged(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> bool:
    """Whether writing ``new`` would tell nothing new (the same status, reason, message and generation)."""
    previous = {c.get("type"): c for c in old}
    return all(
        c["type"] in previous and all(previous[c["type"]].get(k) == c.get(k) for k in _COMPARED) for c in new
    )
