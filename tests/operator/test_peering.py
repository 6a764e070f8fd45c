"""Two replicas of the operator: only the one with the higher peering priority writes; when it stops,
the other takes over (kopf peering through the ClusterKopfPeering "spendmeter")."""

from __future__ import annotations

import contextlib

import kubernetes
import pytest
from conftest import ControlPlane, start_operator, wait_for

pytestmark = pytest.mark.controlplane
GROUP, VERSION, PLURAL = "spendmeter.io", "v1alpha1", "pricebooks"


def test_only_the_leading_replica_writes_and_the_other_takes_over(control_plane: ControlPlane) -> None:
    client = control_plane.client()
    custom = kubernetes.client.CustomObjectsApi(client)
    core = kubernetes.client.CoreV1Api(client)
    peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "spendmeter"}}
    custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
    core.create_namespace({"metadata": {"name": "peered"}})
    wait_for(lambda: core.read_namespaced_service_account("default", "peered"), 60, "service account")

    leader = start_operator(control_plane, "operator-leader", "--priority", "100")
    follower = start_operator(control_plane, "operator-follower", "--priority", "50")
    try:
        pod = {"metadata": {"name": "agent", "annotations": {"spendmeter.io/inject": "true"}},
               "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}  # fmt: skip
        core.create_namespaced_pod("peered", pod)

        def configmap_names_book(name: str) -> bool:
            cm = core.read_namespaced_config_map("spendmeter-prices", "peered")
            return f"name: {name}\n" in cm.data["prices.yaml"]

        book = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PriceBook", "metadata": {"name": "peered-one"},
                "spec": {"models": [{"model": "m1", "perMillionTokens": {"input": 1, "output": 2}}]}}  # fmt: skip
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, book)
        wait_for(lambda: configmap_names_book("peered-one"), 30, "the leader to write the ConfigMap")
        assert "Prices written to ConfigMap peered/" in leader.output()
        assert "Prices written" not in follower.output()
        assert "Resuming operations" not in follower.output()  # a replica starts paused until it leads

        leader.stop()
        book["metadata"]["name"] = "peered-two"
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, book)
        wait_for(lambda: configmap_names_book("peered-two"), 60, "the follower to take over")
        assert "Prices written to ConfigMap peered/" in follower.output()
    finally:
        leader.stop()
        follower.stop()
        for name in ("peered-one", "peered-two"):
            with contextlib.suppress(kubernetes.client.ApiException):
                custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
