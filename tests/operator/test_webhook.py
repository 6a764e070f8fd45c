"""The injection end to end: the real API server calls the operator's webhook for the pods the real
controller-manager creates, and stores what the webhook answered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml
from conftest import (
    ControlPlane,
    OperatorProcess,
    create_deployment,
    create_namespace,
    env_of,
    pod_of,
    start_operator,
    wait_for,
)
from spendmeter_operator import mutation, options

pytestmark = pytest.mark.controlplane
PODS = Path(__file__).resolve().parents[1] / "data" / "pods"


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane) -> Iterator[OperatorProcess]:
    op = start_operator(control_plane, "operator-webhook", "--standalone")
    yield op
    op.stop()


def namespace(cp: ControlPlane, name: str, labels: dict[str, str] | None = None) -> str:
    return create_namespace(cp.client(), name, labels)


def deployment(cp: ControlPlane, ns: str, name: str, annotations: dict[str, str]) -> None:
    create_deployment(cp.client(), ns, name, annotations)


def test_a_deployments_pod_is_injected_with_the_deployment_as_workload(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    ns = namespace(control_plane, "shop")
    deployment(control_plane, ns, "chat-api", {options.INJECT: "true"})
    pod = pod_of(control_plane.client(), ns, "chat-api")
    assert pod["metadata"]["annotations"][options.STATUS] == options.STATUS_INJECTED
    init = {c["name"]: c for c in pod["spec"]["initContainers"]}
    assert list(init) == [mutation.INIT_CONTAINER, mutation.PROXY_CONTAINER]
    proxy = init[mutation.PROXY_CONTAINER]
    assert proxy["restartPolicy"] == "Always"
    assert proxy["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert env_of(proxy)["SPENDMETER_WORKLOAD"] == "chat-api"
    assert env_of(proxy)["SPENDMETER_WORKLOAD_KIND"] == "Deployment"
    assert env_of(proxy)["SPENDMETER_LABEL_TEAM"] == "search"
    app = pod["spec"]["containers"][0]
    assert env_of(app)["SSL_CERT_FILE"] == mutation.CA_BUNDLE
    assert {"name": mutation.CA_VOLUME, "mountPath": mutation.CA_DIR, "readOnly": True} in app["volumeMounts"]


def test_a_pod_that_opts_out_is_left_alone(control_plane: ControlPlane, operator: OperatorProcess) -> None:
    ns = namespace(control_plane, "opted-out", {options.INJECT: "enabled"})
    deployment(control_plane, ns, "batch", {options.INJECT: "false"})
    pod = pod_of(control_plane.client(), ns, "batch")
    assert options.STATUS not in (pod["metadata"].get("annotations") or {})
    assert not pod["spec"].get("initContainers")


def test_a_labelled_namespace_injects_pods_without_annotation(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    ns = namespace(control_plane, "labelled", {options.INJECT: "enabled"})
    deployment(control_plane, ns, "worker", {})
    pod = pod_of(control_plane.client(), ns, "worker")
    assert pod["metadata"]["annotations"][options.STATUS] == options.STATUS_INJECTED


def test_a_namespace_labelled_later_injects_the_pods_created_after(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    ns = namespace(control_plane, "labelled-later")
    deployment(control_plane, ns, "before", {})
    assert options.STATUS not in (
        pod_of(control_plane.client(), ns, "before")["metadata"].get("annotations") or {}
    )
    core = kubernetes.client.CoreV1Api(control_plane.client())
    core.patch_namespace(ns, {"metadata": {"labels": {options.INJECT: "enabled"}}})

    def injected() -> bool:  # the operator's copy of the namespace labels follows within moments
        name = f"probe-{len(core.list_namespaced_pod(ns).items)}"
        pod = {
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
        }
        stored = core.create_namespaced_pod(ns, pod)
        return (stored.metadata.annotations or {}).get(options.STATUS) == options.STATUS_INJECTED

    wait_for(injected, 10, "a pod of the newly labelled namespace to be injected", interval=0.5)


def test_the_operators_own_namespace_is_never_injected(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    ns = namespace(control_plane, "spendmeter-system", {options.INJECT: "enabled"})
    deployment(control_plane, ns, "itself", {options.INJECT: "true"})
    pod = pod_of(control_plane.client(), ns, "itself")
    assert not pod["spec"].get("initContainers")


def test_an_injected_pod_is_not_injected_twice(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    ns = namespace(control_plane, "again")
    pod = yaml.safe_load((PODS / "bare-pod.out.yaml").read_text())
    pod["metadata"]["namespace"] = ns
    client = control_plane.client()
    stored = client.sanitize_for_serialization(
        kubernetes.client.CoreV1Api(client).create_namespaced_pod(ns, pod)
    )
    names = [c["name"] for c in stored["spec"]["initContainers"]]
    assert names == [mutation.INIT_CONTAINER, mutation.PROXY_CONTAINER]


@pytest.mark.parametrize("case", sorted(p.name.removesuffix(".out.yaml") for p in PODS.glob("*.out.yaml")))
def test_every_golden_pod_is_accepted_by_the_api_server(control_plane: ControlPlane, case: str) -> None:
    pod = yaml.safe_load((PODS / f"{case}.out.yaml").read_text())
    pod["metadata"]["namespace"] = "default"
    pod["metadata"].pop("ownerReferences", None)
    pod["spec"].pop("serviceAccountName", None)
    core = kubernetes.client.CoreV1Api(control_plane.client())
    core.create_namespaced_pod("default", pod, dry_run="All")


def test_pods_are_created_when_the_operator_is_down(control_plane: ControlPlane) -> None:
    op = start_operator(control_plane, "operator-stopped", "--standalone")
    op.stop()
    admission = kubernetes.client.AdmissionregistrationV1Api(control_plane.client())
    hook = admission.read_mutating_webhook_configuration("spendmeter").webhooks[0]
    assert hook.failure_policy == "Ignore"
    assert (
        f"127.0.0.1:{op.webhook_port}/" in hook.client_config.url
    )  # the API server calls a stopped operator
    ns = namespace(control_plane, "operator-down")
    deployment(control_plane, ns, "resilient", {options.INJECT: "true"})
    pod = pod_of(control_plane.client(), ns, "resilient")
    assert options.STATUS not in (pod["metadata"].get("annotations") or {})
