"""Golden tests of the pod mutation: each ``tests/data/pods/<case>.in.yaml`` pod, injected, must equal the
``<case>.out.yaml`` beside it; injecting the result again changes nothing; and the JSON patch that kopf
computes from the two, applied to the original as the API server does, gives the same pod.

To regenerate the expected pods after an intended change: ``SPENDMETER_UPDATE_GOLDEN=1 pytest <this file>``,
then read the diff before committing it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import jsonpatch
import kopf
import pytest
import yaml
from spendmeter_operator import mutation, options, workloads

PODS = Path(__file__).resolve().parents[1] / "data" / "pods"
CASES = sorted(p.name.removesuffix(".in.yaml") for p in PODS.glob("*.in.yaml"))
SKIP_NAMESPACES = frozenset({"spendmeter-system", "kube-system"})
DEFAULTS = options.Options(cost_labels={"team": "team"})
UPDATE = os.environ.get("SPENDMETER_UPDATE_GOLDEN") == "1"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


async def no_api(kind: str, namespace: str, name: str) -> None:
    """The API cannot be asked here: the workload comes from names alone."""
    return None


def injected(pod: dict[str, Any]) -> dict[str, Any]:
    annotations = pod["metadata"].get("annotations") or {}
    pod_options = options.pod_options(annotations, DEFAULTS)
    workload = asyncio.run(workloads.resolve_workload(pod, no_api))
    return mutation.inject(pod, pod_options, workload).pod


def test_there_are_golden_pods_for_every_kind_of_owner() -> None:
    kinds = {"deployment", "job", "cronjob", "statefulset", "daemonset", "bare-pod", "explicit-mode"}
    assert kinds <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_injected_pod_matches_the_golden_one(case: str) -> None:
    pod = load(PODS / f"{case}.in.yaml")
    namespace_labels = load(PODS / "namespaces.yaml").get(pod["metadata"]["namespace"]) or {}
    decision = mutation.decide(pod, namespace_labels, SKIP_NAMESPACES)
    result = injected(pod) if decision.inject else pod
    expected_path = PODS / f"{case}.out.yaml"
    if UPDATE:
        expected_path.write_text(yaml.safe_dump(result, sort_keys=False, width=110))
    assert result == load(expected_path)


@pytest.mark.parametrize("case", CASES)
def test_injecting_an_injected_pod_changes_nothing(case: str) -> None:
    expected = load(PODS / f"{case}.out.yaml")
    assert not mutation.decide(expected, {options.INJECT: "enabled"}, SKIP_NAMESPACES).inject
    assert injected(expected) == expected


@pytest.mark.parametrize("case", CASES)
def test_kopf_patch_turns_the_pod_into_the_golden_one(case: str) -> None:
    pod = load(PODS / f"{case}.in.yaml")
    expected = load(PODS / f"{case}.out.yaml")
    patch = kopf.Patch(body=kopf.Body(pod), fns=[mutation.transform_to(expected)])
    ops = patch.as_json_patch()
    assert bool(ops) == (pod != expected)
    assert jsonpatch.apply_patch(pod, ops) == expected
