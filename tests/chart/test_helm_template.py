"""The chart rendered by the real helm (``helm lint``, ``helm template``), no cluster: each ci/ feature file
renders, the objects say what the issue asks of them, the operator accepts the options the chart gives it,
and contradictory values stop the install with a message naming them."""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from spendmeter_operator import cli, mutation, options, webhooks

from .helming import CHART, NAMESPACE, Helm, HelmError, ci_values, find

CI = CHART / "ci"


def operator_args(objects: list[dict[str, Any]]) -> argparse.Namespace:
    """The Deployment's arguments, parsed by the operator's own command line."""
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "operator"
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(container["args"][1:])


def secret_data(objects: list[dict[str, Any]]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in find(objects, "Secret")["data"].items()}


def test_helm_lint_passes_for_the_defaults_and_every_feature(helm: Helm) -> None:
    for values in (None, *ci_values()):
        args = ["lint", str(CHART), "--strict"] + (["--values", str(values)] if values else [])
        out = helm.run(*args)
        assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize("values", ci_values(), ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_every_feature_renders_labelled_objects_in_the_release_namespace(helm: Helm, values: Path) -> None:
    objects = helm.template(values)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
            "MutatingWebhookConfiguration"} <= kinds  # fmt: skip
    for o in objects:
        meta = o["metadata"]
        assert len(meta["name"]) <= 63
        assert meta["labels"]["app.kubernetes.io/part-of"] == "spendmeter"
        assert meta["labels"]["app.kubernetes.io/instance"] == "spendmeter"
        if o["kind"] in {"Deployment", "ServiceAccount", "Service", "Secret", "PodMonitor", "PrometheusRule"}:
            assert meta["namespace"] == NAMESPACE
    operator_args(objects)  # the operator accepts every option the chart gives it


def test_default_image_is_the_operators_default_and_the_projects_version(helm: Helm) -> None:
    objects = helm.template()
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == options.Options().image
    args = operator_args(objects)
    assert args.image == options.Options().image


def test_webhook_never_blocks_and_skips_its_own_kube_system_and_opted_out_namespaces(helm: Helm) -> None:
    objects = helm.template(CI / "injection-values.yaml")
    (hook,) = find(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["name"] == webhooks.WEBHOOK_NAME
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] <= 10
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]  # fmt: skip
    by_key = {e["key"]: e for e in hook["namespaceSelector"]["matchExpressions"]}
    skipped = by_key["kubernetes.io/metadata.name"]
    assert skipped["operator"] == "NotIn"
    assert set(skipped["values"]) == {NAMESPACE, "kube-system", "monitoring", "istio-system"}
    assert by_key[options.INJECT] == {"key": options.INJECT, "operator": "NotIn", "values": ["disabled"]}
    assert hook["objectSelector"]["matchExpressions"] == [
        {"key": options.INJECTED_LABEL, "operator": "DoesNotExist"}
    ]
    service = find(objects, "Service")
    assert hook["clientConfig"]["service"] == {"name": service["metadata"]["name"], "namespace": NAMESPACE,
                                                "port": 443, "path": f"/{webhooks.HANDLER_ID}"}  # fmt: skip


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_generated_tls_signs_the_service_name_and_is_the_webhooks_ca(helm: Helm) -> None:
    objects = helm.template()
    data = secret_data(objects)
    (hook,) = find(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == data["ca.crt"]
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    cert.verify_directly_issued_by(ca)
    service = find(objects, "Service")["metadata"]["name"]
    assert f"{service}.{NAMESPACE}.svc" in _san(cert).get_values_for_type(x509.DNSName)
    deployment = find(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in deployment["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == find(objects, "Secret")["metadata"]["name"]
    assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key", "ca.crt"}


def test_out_of_cluster_url_is_called_and_named_by_the_certificate(helm: Helm) -> None:
    objects = helm.template(CI / "outofcluster-values.yaml")
    (hook,) = find(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"]["url"] == f"https://127.0.0.1:9443/{webhooks.HANDLER_ID}"
    assert "service" not in hook["clientConfig"]
    cert = x509.load_pem_x509_certificate(secret_data(objects)["tls.crt"])
    assert ipaddress.ip_address("127.0.0.1") in _san(cert).get_values_for_type(x509.IPAddress)


@pytest.mark.parametrize("values", ["certmanager-values.yaml", "selfsigned-certmanager-values.yaml"])
def test_cert_manager_issues_the_secret_the_operator_mounts(helm: Helm, values: str) -> None:
    objects = helm.template(CI / values)
    assert not [o for o in objects if o["kind"] == "Secret"], "cert-manager writes the Secret, not the chart"
    certificate = find(objects, "Certificate")
    deployment = find(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in deployment["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    configuration = find(objects, "MutatingWebhookConfiguration")
    name = f"{NAMESPACE}/{certificate['metadata']['name']}"
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == name
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    issuer = certificate["spec"]["issuerRef"]
    if values == "certmanager-values.yaml":
        assert issuer == {"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    else:
        assert find(objects, "Issuer")["metadata"]["name"] == issuer["name"]


def test_injection_defaults_reach_the_operator(helm: Helm) -> None:
    objects = helm.template(CI / "injection-values.yaml")
    defaults = cli.settings_from(operator_args(objects)).defaults
    values = yaml.safe_load((CI / "injection-values.yaml").read_text())
    assert defaults.image == "registry.example.com/platform/spendmeter:0.1.0-custom"
    assert defaults.mode == "transparent"
    assert defaults.llm_hosts == (
        options.parse_llm_host("llm-gateway.internal:8443=openai"),
        options.parse_llm_host("claude.internal=anthropic"),
    )
    assert dict(defaults.cost_labels) == values["injection"]["costLabels"]
    assert defaults.exclude_ports == (5432, 6379)
    assert defaults.exclude_cidrs == ("10.0.0.0/8", "fd00::/8")
    assert (defaults.proxy_uid, defaults.scrape_annotations) == (16600, False)
    assert cli.settings_from(operator_args(helm.template())).defaults.proxy_uid == options.PROXY_UID
    assert defaults.resources == options.Resources("100m", "96Mi", "500m", "384Mi")
    args = operator_args(objects)
    assert args.prometheus_url == values["budgets"]["prometheusUrl"]
    assert args.budget_interval == 30
    explicit = cli.settings_from(operator_args(helm.template(CI / "explicit-values.yaml"))).defaults
    assert explicit.mode == "explicit"


def test_operator_runs_locked_down_and_registers_no_webhook_itself(helm: Helm) -> None:
    objects = helm.template(CI / "ha-values.yaml")
    deployment = find(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    args = operator_args(objects)
    assert args.register_webhook is False
    assert args.namespace == NAMESPACE
    assert args.peering == find(objects, "ClusterKopfPeering")["metadata"]["name"]
    assert args.priority is None  # each replica derives its own from its pod name: no tie
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"webhook": args.webhook_port, "health": args.health_port}
    service_port = find(objects, "Service")["spec"]["ports"][0]
    assert service_port["targetPort"] == "webhook" and service_port["port"] == 443


def test_rbac_is_least_privilege(helm: Helm) -> None:
    objects = helm.template()
    rules = find(objects, "ClusterRole")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}  # fmt: skip
    assert not any("*" in item for item in granted)
    assert not any(r in {"secrets", "mutatingwebhookconfigurations", "clusterroles"} for _, r, _ in granted)
    assert not any(r == "pods" and v in {"create", "update", "patch", "delete"} for _, r, v in granted)
    binding = find(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == find(objects, "ClusterRole")["metadata"]["name"]
    account = find(objects, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    ]


def test_monitoring_objects_scrape_the_sidecars_and_ship_the_dashboard(helm: Helm) -> None:
    objects = helm.template(CI / "monitoring-values.yaml")
    monitors = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PodMonitor"}
    monitor = monitors.pop("spendmeter")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["selector"]["matchLabels"] == {options.INJECTED_LABEL: "true"}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == mutation.METRICS_PORT_NAME
    kept = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert kept == {"namespace": ["__meta_kubernetes_namespace"], "pod": ["__meta_kubernetes_pod_name"]}
    # The operator's own metrics (budgets) keep their namespace label: honorLabels.
    (operator_monitor,) = monitors.values()
    (operator_endpoint,) = operator_monitor["spec"]["podMetricsEndpoints"]
    assert operator_endpoint["port"] == "health" and operator_endpoint["honorLabels"] is True
    operator_pods = find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert operator_monitor["spec"]["selector"]["matchLabels"].items() <= operator_pods.items()
    dashboard = find(objects, "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    shipped = json.loads(dashboard["data"]["spendmeter.json"])
    assert shipped == json.loads((CHART / "dashboards" / "spendmeter.json").read_text())
    alerts = {r["alert"] for g in find(objects, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"SpendmeterSpendRateHigh", "SpendmeterUnpricedModel", "SpendmeterWastedShareHigh",
                      "SpendmeterSidecarErrors", "SpendBudgetThresholdReached", "SpendBudgetExceeded"}  # fmt: skip


def test_monitoring_is_off_by_default_but_the_dashboard_is_on(helm: Helm) -> None:
    kinds = {o["kind"] for o in helm.template()}
    assert "PodMonitor" not in kinds and "PrometheusRule" not in kinds
    assert "ConfigMap" in kinds


@pytest.mark.parametrize(
    "sets, message",
    [
        (
            [
                "webhook.tls.certManager.enabled=true",
                "webhook.tls.existingSecret=mine",
                "webhook.tls.caBundle=x",
            ],
            "webhook.tls.certManager.enabled and webhook.tls.existingSecret are both set",
        ),
        (["webhook.tls.existingSecret=mine"], "webhook.tls.caBundle is empty"),
        (["webhook.tls.caBundle=x"], "webhook.tls.caBundle is set without webhook.tls.existingSecret"),
        (["injection.costLabels.team=workload"], 'maps pod label "team" to "workload"'),
        (["injection.costLabels.team=team", "injection.costLabels.squad=team"], 'to the cost label "team"'),
        (["operator.replicas=0"], "/operator/replicas"),
        (["injection.mode=sidecar"], "/injection/mode"),
        (["injection.llmHosts[0].host=gw.corp"], "/injection/llmHosts/0"),
        (["webhook.url=http://127.0.0.1:9443"], "/webhook/url"),
        (["injection.resources.requests.cpu=lots"], "/injection/resources/requests/cpu"),
        (["monitoring.prometheusRule.wastedShare=2"], "/monitoring/prometheusRule/wastedShare"),
    ],
)
def test_conflicting_or_invalid_values_fail_with_a_clear_message(
    helm: Helm, sets: list[str], message: str
) -> None:
    with pytest.raises(HelmError) as failure:
        helm.template(sets=sets)
    assert message in str(failure.value)
