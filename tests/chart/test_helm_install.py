"""``helm install`` into the real API server of the operator's tests, then the operator run locally as the
chart made it: with the chart's ServiceAccount (so its RBAC is what is tested), the chart's options, and
the chart's generated certificate, behind the chart's webhook configuration pointed at it by URL. An
annotated Deployment's pod must come out injected; an upgrade must keep the webhook's CA."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from cryptography import x509
from spendmeter_operator import mutation, options

from .conftest import operator_fixtures
from .helming import CHART, NAMESPACE, RELEASE, Helm, find

pytestmark = pytest.mark.controlplane
wait_for = operator_fixtures.wait_for  # type: ignore[attr-defined]
start_operator = operator_fixtures.start_operator  # type: ignore[attr-defined]
free_port = operator_fixtures.free_port  # type: ignore[attr-defined]

# Options the local run sets itself: where it listens, and the certificate folder (the Secret's files).
LOCAL_OPTIONS = ("--webhook-listen", "--webhook-port", "--health-port", "--webhook-cert-dir")


@dataclasses.dataclass
class Release:
    cp: Any
    helm: Helm
    webhook_port: int
    values: list[str]

    def install(self, command: str, *extra: str) -> str:
        sets = [arg for value in self.values for arg in ("--set", value)]
        return self.helm.run(command, RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
                             *sets, *extra, kubeconfig=self.cp.kubeconfig)  # fmt: skip

    def manifest(self) -> list[dict[str, Any]]:
        text = self.helm.run(
            "get", "manifest", RELEASE, "--namespace", NAMESPACE, kubeconfig=self.cp.kubeconfig
        )
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def client(self) -> Any:
        return self.cp.client()


@pytest.fixture(scope="module")
def release(control_plane: Any, helm: Helm) -> Iterator[Release]:
    port = free_port()
    values = [f"webhook.url=https://127.0.0.1:{port}", "injection.costLabels.team=team",
              "injection.excludeOutboundPorts={5432}", "operator.verbose=true"]  # fmt: skip
    rel = Release(control_plane, helm, port, values)
    remove_crds(rel)  # the control plane comes with the project's CRDs: let the chart install its own
    rel.install("install")
    yield rel
    helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, kubeconfig=control_plane.kubeconfig)


def remove_crds(rel: Release) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(rel.client())
    objects = kubernetes.client.CustomObjectsApi(rel.client())
    crds = [
        doc
        for path in sorted((CHART / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]
    names = [doc["metadata"]["name"] for doc in crds]

    def served() -> bool:
        # A CRD deleted before the API server can list its objects stays Terminating ("storage is
        # (re)initializing"): wait until every kind answers a list.
        for doc in crds:
            version = doc["spec"]["versions"][0]["name"]
            objects.list_cluster_custom_object(doc["spec"]["group"], version, doc["spec"]["names"]["plural"])
        return True

    wait_for(served, 60, "the CRDs' objects to be listable")
    for name in names:
        ext.delete_custom_resource_definition(name)
    present = lambda: {c.metadata.name for c in ext.list_custom_resource_definition().items} & set(names)  # noqa: E731
    wait_for(lambda: not present(), 60, "the CRDs to be removed")


def service_account_kubeconfig(rel: Release, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (a short-lived bound token)."""
    core = kubernetes.client.CoreV1Api(rel.client())
    token = core.create_namespaced_service_account_token(
        account, NAMESPACE, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    config = yaml.safe_load(rel.cp.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path.write_text(yaml.safe_dump(config))
    return path


def secret_files(rel: Release, name: str, folder: Path) -> Path:
    secret = kubernetes.client.CoreV1Api(rel.client()).read_namespaced_secret(name, NAMESPACE)
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (folder / key).write_bytes(base64.b64decode(secret.data[key]))
    return folder


@pytest.fixture(scope="module")
def chart_operator(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    manifest = release.manifest()
    pod = find(manifest, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    (tls,) = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    work = tmp_path_factory.mktemp("chart-operator")
    certs = secret_files(release, tls, work / "webhook")
    kubeconfig = service_account_kubeconfig(release, pod["serviceAccountName"], work / "kubeconfig")
    args = [a for a in container["args"][1:] if not a.startswith(LOCAL_OPTIONS)]
    as_chart = dataclasses.replace(release.cp, kubeconfig=kubeconfig)
    op = start_operator(as_chart, "chart-operator", *args, "--webhook-cert-dir", str(certs),
                        "--webhook-port", str(release.webhook_port))  # fmt: skip
    yield op
    op.stop()


def test_every_object_of_the_release_is_stored(release: Release) -> None:
    dynamic = kubernetes.dynamic.DynamicClient(release.client())
    manifest = release.manifest()
    assert {o["kind"] for o in manifest} >= {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                             "Service", "Secret", "MutatingWebhookConfiguration", "ConfigMap",
                                             "ClusterKopfPeering"}  # fmt: skip
    for obj in manifest:
        api = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        meta = obj["metadata"]
        stored = api.get(name=meta["name"], namespace=meta.get("namespace"))
        assert stored.metadata.labels["app.kubernetes.io/instance"] == RELEASE
    crds = kubernetes.client.ApiextensionsV1Api(release.client()).list_custom_resource_definition().items
    assert {c.metadata.name for c in crds} >= {"pricebooks.spendmeter.io", "spendbudgets.spendmeter.io"}


def namespace(rel: Release, name: str, labels: dict[str, str] | None = None) -> None:
    operator_fixtures.create_namespace(rel.client(), name, labels)


def deployment_pod(rel: Release, ns: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
    operator_fixtures.create_deployment(rel.client(), ns, name, annotations)
    pod: dict[str, Any] = operator_fixtures.pod_of(rel.client(), ns, name)
    return pod


env_of = operator_fixtures.env_of  # type: ignore[attr-defined]


def test_an_annotated_deployments_pod_comes_out_injected(release: Release, chart_operator: Any) -> None:
    namespace(release, "shop")
    pod = deployment_pod(release, "shop", "chat-api", {options.INJECT: "true"})
    assert pod["metadata"]["annotations"][options.STATUS] == options.STATUS_INJECTED
    init = {c["name"]: c for c in pod["spec"]["initContainers"]}
    assert list(init) == [mutation.INIT_CONTAINER, mutation.PROXY_CONTAINER]
    assert init[mutation.PROXY_CONTAINER]["image"] == options.Options().image
    assert "5432" in init[mutation.INIT_CONTAINER]["args"]
    proxy_env = env_of(init[mutation.PROXY_CONTAINER])
    assert proxy_env["SPENDMETER_WORKLOAD"] == "chat-api"
    assert proxy_env["SPENDMETER_WORKLOAD_KIND"] == "Deployment"
    assert proxy_env["SPENDMETER_LABEL_TEAM"] == "search"
    core = kubernetes.client.CoreV1Api(release.client())
    wait_for(lambda: core.read_namespaced_config_map("spendmeter-prices", "shop"), 60,
             "the operator, with the chart's RBAC, to write the namespace's prices")  # fmt: skip
    assert "Forbidden" not in chart_operator.output(), chart_operator.output()[-3000:]


def test_a_namespace_with_the_opt_out_label_is_never_injected(release: Release, chart_operator: Any) -> None:
    namespace(release, "opted-out-ns", {options.INJECT: "disabled"})
    pod = deployment_pod(release, "opted-out-ns", "batch", {options.INJECT: "true"})
    assert options.STATUS not in (pod["metadata"].get("annotations") or {})
    assert not pod["spec"].get("initContainers")


def webhook_ca(rel: Release) -> bytes:
    api = kubernetes.client.AdmissionregistrationV1Api(rel.client())
    (configuration,) = [c for c in api.list_mutating_webhook_configuration().items
                        if (c.metadata.labels or {}).get("app.kubernetes.io/instance") == RELEASE]  # fmt: skip
    return base64.b64decode(configuration.webhooks[0].client_config.ca_bundle)


def tls_secret(rel: Release) -> dict[str, bytes]:
    name = find(rel.manifest(), "Secret")["metadata"]["name"]
    secret = kubernetes.client.CoreV1Api(rel.client()).read_namespaced_secret(name, NAMESPACE)
    return {k: base64.b64decode(v) for k, v in secret.data.items()}


def test_upgrades_keep_the_webhook_ca_and_certificate(release: Release) -> None:
    before, ca_before = tls_secret(release), webhook_ca(release)
    assert ca_before == before["ca.crt"]
    release.install("upgrade")
    after = tls_secret(release)
    assert after["tls.crt"] == before["tls.crt"] and after["ca.crt"] == before["ca.crt"]
    assert webhook_ca(release) == ca_before

    # A new host for the webhook: a new certificate naming it, from the same CA.
    release.values[0] = f"webhook.url=https://127.0.0.2:{release.webhook_port}"
    release.install("upgrade")
    moved = tls_secret(release)
    assert moved["ca.crt"] == before["ca.crt"] and webhook_ca(release) == ca_before
    cert = x509.load_pem_x509_certificate(moved["tls.crt"])
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(moved["ca.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.2")]
