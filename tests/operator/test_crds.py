"""The CRDs, installed in a real API server: valid objects are stored, bad ones are refused at the API
(with field validation ``Strict``, as kubectl sends it), so a typo never reaches the operator."""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest
from conftest import ControlPlane

pytestmark = pytest.mark.controlplane

GROUP, VERSION = "spendmeter.io", "v1alpha1"


def pricebook(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PriceBook", "metadata": {"name": name}, "spec": spec}


def budget(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SpendBudget",
        "metadata": {"name": name},
        "spec": spec,
    }


GPT4O = {
    "provider": "openai",
    "model": "gpt-4o",
    "perMillionTokens": {"input": 2.5, "output": 10, "cachedInput": 1.25},
}


def create_book(cp: ControlPlane, body: dict[str, Any]) -> Any:
    api = kubernetes.client.CustomObjectsApi(cp.client())
    return api.create_cluster_custom_object(GROUP, VERSION, "pricebooks", body, field_validation="Strict")


def create_budget(cp: ControlPlane, body: dict[str, Any]) -> Any:
    api = kubernetes.client.CustomObjectsApi(cp.client())
    return api.create_namespaced_custom_object(
        GROUP, VERSION, "default", "spendbudgets", body, field_validation="Strict"
    )


def test_a_valid_pricebook_is_stored_as_written(control_plane: ControlPlane) -> None:
    spec = {
        "models": [
            GPT4O,
            {"match": r"^claude-sonnet-4(-\d{8})?$", "perMillionTokens": {"input": 3, "output": 15},
             "tiers": [{"aboveInputTokens": 200000, "perMillionTokens": {"input": 6, "output": 22.5}}]},
        ],
        "discounts": [{"provider": "openai", "percent": 15}],
        "aliases": [{"provider": "azure.ai.openai", "from": "prod-gpt4o", "to": "gpt-4o"}],
    }  # fmt: skip
    stored = create_book(control_plane, pricebook("crd-valid", spec))
    assert stored["spec"] == spec


@pytest.mark.parametrize(
    ("case", "spec", "complaint"),
    [
        ("negative-price", {"models": [{**GPT4O, "perMillionTokens": {"input": -1, "output": 10}}]}, "input"),
        (
            "unknown-field",
            {"models": [{**GPT4O, "perMilionTokens": {"input": 1, "output": 1}}]},
            "perMilionTokens",
        ),
        ("no-model-name", {"models": [{"perMillionTokens": {"input": 1, "output": 2}}]}, "exactly one of"),
        ("name-and-regex", {"models": [{**GPT4O, "match": "^gpt"}]}, "exactly one of"),
        ("no-output-price", {"models": [{"model": "m", "perMillionTokens": {"input": 1}}]}, "output"),
        ("alias-without-target", {"aliases": [{"from": "prod-gpt4o"}]}, "to"),
        ("discount-over-100", {"discounts": [{"percent": 150}]}, "percent"),
    ],
)
def test_an_invalid_pricebook_is_refused(
    control_plane: ControlPlane, case: str, spec: Any, complaint: str
) -> None:
    with pytest.raises(kubernetes.client.ApiException) as caught:
        create_book(control_plane, pricebook(f"crd-{case}", spec))
    assert caught.value.status in (400, 422), caught.value.body
    assert complaint in caught.value.body


def test_a_valid_spendbudget_is_stored_with_defaults(control_plane: ControlPlane) -> None:
    spec = {"window": "month", "limitUSD": 250, "workloads": [{"name": "chat-api"}]}
    stored = create_budget(control_plane, budget("crd-valid", spec))
    assert stored["spec"]["action"] == "alert"
    assert stored["spec"]["alertThresholds"] == [80, 100]
    assert stored["spec"]["workloads"] == [{"kind": "Deployment", "name": "chat-api"}]


@pytest.mark.parametrize(
    ("case", "spec", "complaint"),
    [
        ("no-window", {"limitUSD": 10}, "window"),
        ("bad-window", {"window": "week", "limitUSD": 10}, "window"),
        ("negative-limit", {"window": "day", "limitUSD": -5}, "limitUSD"),
        ("zero-limit", {"window": "day", "limitUSD": 0}, "limitUSD"),
        ("bad-action", {"window": "day", "limitUSD": 10, "action": "explode"}, "action"),
        ("workload-without-name", {"window": "day", "limitUSD": 10, "workloads": [{"kind": "Job"}]}, "name"),
        ("unknown-field", {"window": "day", "limitUSD": 10, "limit": 5}, "limit"),
    ],
)
def test_an_invalid_spendbudget_is_refused(
    control_plane: ControlPlane, case: str, spec: Any, complaint: str
) -> None:
    with pytest.raises(kubernetes.client.ApiException) as caught:
        create_budget(control_plane, budget(f"crd-{case}", spec))
    assert caught.value.status in (400, 422), caught.value.body
    assert complaint in caught.value.body
