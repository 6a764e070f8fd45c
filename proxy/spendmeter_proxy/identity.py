"""Who the proxy meters for: the workload identity the operator puts in the sidecar's environment.

The operator sets ``SPENDMETER_WORKLOAD`` and ``SPENDMETER_WORKLOAD_KIND`` (the owner a person would name:
the Deployment, not its ReplicaSet), ``SPENDMETER_NAMESPACE`` and ``SPENDMETER_POD`` (downward API), and one
``SPENDMETER_LABEL_<NAME>`` per cost label mapped from pod labels (``SPENDMETER_LABEL_TEAM=search``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from spendmeter_proxy.metrics import label_name

LABEL_PREFIX = "SPENDMETER_LABEL_"
RESERVED = frozenset(
    {
        "workload",
        "workload_kind",
        "provider",
        "model",
        "operation",
        "status",
        "type",
        "reason",
        "stream",
        "le",
        "kind",
        "namespace",
        "pod",
        "job",
        "instance",
    }
)


@dataclass(frozen=True, slots=True)
class Identity:
    workload: str = "unknown"
    workload_kind: str = "unknown"
    namespace: str = ""
    pod: str = ""
    cost_labels: Mapping[str, str] = field(default_factory=dict)

    def metric_labels(self) -> dict[str, str]:
        """The constant labels of every LLM series of this pod."""
        return {"workload": self.workload, "workload_kind": self.workload_kind, **self.cost_labels}


def parse_identity(environ: Mapping[str, str]) -> Identity:
    """Reads the identity from an environment; a cost label colliding with a built-in label is a ValueError."""
    labels: dict[str, str] = {}
    for key, value in sorted(environ.items()):
        if key.startswith(LABEL_PREFIX) and key != LABEL_PREFIX:
            name = label_name(key[len(LABEL_PREFIX) :])
            if name in RESERVED or name.startswith("__"):
                raise ValueError(f"cost label {key} would shadow the built-in label {name!r}; rename it")
            labels[name] = value
    return Identity(
        workload=environ.get("SPENDMETER_WORKLOAD") or environ.get("SPENDMETER_POD") or "unknown",
        workload_kind=environ.get("SPENDMETER_WORKLOAD_KIND") or "unknown",
        namespace=environ.get("SPENDMETER_NAMESPACE", ""),
        pod=environ.get("SPENDMETER_POD", ""),
        cost_labels=labels,
    )
