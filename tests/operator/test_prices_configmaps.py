"""PriceBooks in a real API server become the ConfigMap the injected sidecars read, in every namespace
with injected pods: created, changed and deleted books are reflected; an invalid change is reported on
the book and the last valid version stays in force; the ConfigMap goes when the namespace's pods go."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml
from conftest import ControlPlane, OperatorProcess, start_operator, wait_for
from spendmeter_operator import prices
from spendmeter_proxy.pricebooks import parse_pricebook_documents

pytestmark = pytest.mark.controlplane
GROUP, VERSION, PLURAL = "spendmeter.io", "v1alpha1", "pricebooks"
CONFIGMAP = "spendmeter-prices"


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane) -> Iterator[OperatorProcess]:
    op = start_operator(control_plane, "operator-prices", "--standalone")
    yield op
    op.stop()


def book_file(cp: ControlPlane, namespace: str) -> dict[str, Any] | None:
    """The books in the namespace's price file, by name, as the proxy reads them; None without the file."""
    core = kubernetes.client.CoreV1Api(cp.client())
    try:
        cm = core.read_namespaced_config_map(CONFIGMAP, namespace)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    text = cm.data[prices.CONFIGMAP_KEY]
    parse_pricebook_documents(text, "configmap")  # the proxy accepts the file
    return {d["metadata"]["name"]: d["spec"] for d in yaml.safe_load_all(text) if d}


def injected_pod(cp: ControlPlane, namespace: str, name: str) -> None:
    core = kubernetes.client.CoreV1Api(cp.client())
    core.create_namespace({"metadata": {"name": namespace}})
    wait_for(lambda: core.read_namespaced_service_account("default", namespace), 60, "service account")
    pod = {
        "metadata": {"name": name, "annotations": {"spendmeter.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }
    stored = core.create_namespaced_pod(namespace, pod)
    assert stored.metadata.labels["spendmeter.io/injected"] == "true"


def test_pricebooks_are_reflected_in_the_configmaps(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    cp = control_plane
    custom = kubernetes.client.CustomObjectsApi(cp.client())
    injected_pod(cp, "pricing-a", "agent")
    injected_pod(cp, "pricing-b", "agent")
    rates = {"input": 2.5, "output": 10}
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PriceBook", "metadata": {"name": "negotiated"},
            "spec": {"models": [{"provider": "openai", "model": "gpt-4o", "perMillionTokens": rates}]}}  # fmt: skip
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)

    def has(namespace: str, predicate: Any) -> Any:
        return lambda: (books := book_file(cp, namespace)) is not None and predicate(books)

    for ns in ("pricing-a", "pricing-b"):
        wait_for(has(ns, lambda b: b.get("negotiated", {}).get("models", [{}])[0].get("perMillionTokens") == rates),
                 30, f"the book in {ns}")  # fmt: skip

    # A change is reflected.
    new_rates = {"input": 2.0, "output": 8}
    patch = {"spec": {"models": [{"provider": "openai", "model": "gpt-4o", "perMillionTokens": new_rates}]}}
    custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "negotiated", patch)
    wait_for(has("pricing-a", lambda b: b["negotiated"]["models"][0]["perMillionTokens"] == new_rates),
             30, "the changed book")  # fmt: skip

    # A change the schema cannot catch (a regex that does not compile) is reported; the last good one stays.
    bad = {"spec": {"models": [{"match": "^gpt-4o(", "perMillionTokens": {"input": 1, "output": 1}}]}}
    custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "negotiated", bad)

    def condition() -> Any:
        status = (
            custom.get_cluster_custom_object_status(GROUP, VERSION, PLURAL, "negotiated").get("status") or {}
        )
        ready = [c for c in status.get("conditions") or () if c["type"] == "Ready"]
        return ready and ready[0]["status"] == "False" and ready[0]

    ready = wait_for(condition, 30, "the Ready=False condition")
    assert "regex" in ready["message"]
    assert "last valid version stays in force" in ready["message"]
    assert book_file(cp, "pricing-a")["negotiated"]["models"][0]["perMillionTokens"] == new_rates  # type: ignore[index]

    # Deleting the book removes it from the file.
    custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "negotiated")
    wait_for(has("pricing-b", lambda b: "negotiated" not in b), 30, "the book to go")

    # A namespace whose injected pods are gone loses its ConfigMap.
    core = kubernetes.client.CoreV1Api(cp.client())
    core.delete_namespaced_pod("agent", "pricing-b", grace_period_seconds=0)
    wait_for(lambda: book_file(cp, "pricing-b") is None, 30, "the ConfigMap in pricing-b to go")
    assert book_file(cp, "pricing-a") is not None
