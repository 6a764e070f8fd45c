"""The pure parts around the mutation: annotation parsing, workload identity, prices and certificates."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from cryptography import x509
from spendmeter_operator import certificates, options, prices, workloads


@pytest.mark.parametrize(
    ("annotation", "value", "complaint"),
    [
        (options.MODE, "sidecar", "mode must be one of"),
        (options.EXCLUDE_PORTS, "5432,99999", "out of range"),
        (options.EXCLUDE_CIDRS, "10.0.0.0/33", "10.0.0.0/33"),
        (options.LLM_HOSTS, "gateway.corp", "HOST[:PORT]=PROVIDER"),
        (options.LLM_HOSTS, "gateway.corp=Open AI", "provider"),
        (options.PROXY_MEMORY, "lots", "resource quantity"),
    ],
)
def test_a_bad_annotation_is_reported_by_name(annotation: str, value: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=annotation) as caught:
        options.pod_options({annotation: value}, options.Options())
    assert complaint in str(caught.value)


def test_extra_llm_host_ports_are_redirected_too() -> None:
    pod = options.pod_options({options.LLM_HOSTS: "a.corp:8443=openai, b.corp=anthropic"}, options.Options())
    assert [h.spec() for h in pod.llm_hosts] == ["a.corp:8443=openai", "b.corp=anthropic"]
    assert pod.redirect_ports == (443, 8443)


def test_cost_label_variables_match_what_the_proxy_reads() -> None:
    from spendmeter_proxy.identity import parse_identity

    env = {options.cost_label_env("cost-center"): "cc-42", options.cost_label_env("team"): "search"}
    assert parse_identity(env).cost_labels == {"cost_center": "cc-42", "team": "search"}


def owned_by(
    kind: str, name: str, api_version: str, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    ref = {"apiVersion": api_version, "kind": kind, "name": name, "controller": True}
    return {"metadata": {"namespace": "ns", "labels": dict(labels or {}), "ownerReferences": [ref]}}


class FakeApi:
    """The owner references a Kubernetes API would return, or None for objects it cannot read."""

    def __init__(self, objects: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]]) -> None:
        self.objects = objects

    async def __call__(self, kind: str, namespace: str, name: str) -> Sequence[Mapping[str, Any]] | None:
        return self.objects.get((kind, name))


def resolve(pod: Mapping[str, Any], api: FakeApi) -> workloads.Workload:
    return asyncio.run(workloads.resolve_workload(pod, api))


def test_the_deployment_is_found_through_the_api_whatever_the_names() -> None:
    api = FakeApi({("ReplicaSet", "odd-name"): [{"kind": "Deployment", "name": "web", "controller": True}]})
    pod = owned_by("ReplicaSet", "odd-name", "apps/v1")
    assert resolve(pod, api) == workloads.Workload("Deployment", "web")


def test_a_replicaset_of_its_own_is_the_workload() -> None:
    api = FakeApi({("ReplicaSet", "standalone-rs"): []})
    assert resolve(owned_by("ReplicaSet", "standalone-rs", "apps/v1"), api) == workloads.Workload(
        "ReplicaSet", "standalone-rs"
    )


def test_names_decide_when_the_api_cannot_be_read() -> None:
    pod = owned_by("ReplicaSet", "web-5d4f8b7c9", "apps/v1", {"pod-template-hash": "5d4f8b7c9"})
    assert resolve(pod, FakeApi({})) == workloads.Workload("Deployment", "web")
    job_pod = owned_by("Job", "report-29410560", "batch/v1")
    assert resolve(job_pod, FakeApi({})) == workloads.Workload("CronJob", "report")
    assert resolve(owned_by("Job", "backfill", "batch/v1"), FakeApi({})) == workloads.Workload(
        "Job", "backfill"
    )


def test_a_custom_controller_is_the_workload() -> None:
    pod = owned_by("Rollout", "canary", "argoproj.io/v1alpha1")
    assert resolve(pod, FakeApi({})) == workloads.Workload("Rollout", "canary")


RATES = {"input": 1, "output": 2}


def book(name: str, created: str, spec: Mapping[str, Any]) -> prices.Book:
    return prices.Book(name=name, created=created, generation=1, spec=spec)


def test_books_apply_in_creation_order_and_an_invalid_one_keeps_its_last_valid_version() -> None:
    good = {"models": [{"model": "m", "perMillionTokens": RATES}]}
    broken = {"models": [{"match": "^m(", "perMillionTokens": RATES}]}
    books = [book("later", "2026-02-01T00:00:00Z", good), book("earlier", "2026-01-01T00:00:00Z", broken)]
    result = prices.effective(books, last_good={"earlier": good})
    assert [name for name, _ in result.specs] == ["earlier", "later"]
    assert "regex" in result.errors["earlier"]
    never_valid = prices.effective(books, last_good={})
    assert [name for name, _ in never_valid.specs] == ["later"]


def test_an_alias_loop_is_refused() -> None:
    loop = {"aliases": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]}
    error = prices.validate("loopy", loop)
    assert error is not None and "loop" in error


def test_the_rendered_file_reads_back_as_the_same_books() -> None:
    specs = [("one", {"models": [{"model": "m", "perMillionTokens": RATES}]}), ("two", {"discounts": []})]
    assert prices.parse_rendered(prices.render(specs)) == dict(specs)


def test_the_webhook_certificate_is_trusted_through_its_ca_for_its_hosts(tmp_path: Any) -> None:
    made = certificates.make_certificates(["spendmeter.spendmeter-system.svc", "127.0.0.1"])
    ca_file, cert_file, key_file = made.write(tmp_path)
    assert key_file.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["spendmeter.spendmeter-system.svc"]
    assert cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)  # the key matches the certificate
    client = ssl.create_default_context(cafile=str(ca_file))
    assert client.get_ca_certs()[0]["subject"] == (
        (("organizationName", "spendmeter"),),
        (("commonName", "spendmeter webhook CA"),),
    )


def test_a_namespace_labelled_disabled_keeps_even_opted_in_pods_out() -> None:
    from spendmeter_operator import mutation

    pod = {"metadata": {"namespace": "lab", "annotations": {options.INJECT: "true"}}, "spec": {}}
    assert mutation.decide(pod, {}, frozenset()).inject
    decision = mutation.decide(pod, {options.INJECT: "disabled"}, frozenset())
    assert not decision.inject and "opts out" in decision.reason


def test_replicas_get_different_peering_priorities_from_their_pod_names() -> None:
    from spendmeter_operator.cli import host_priority

    names = [f"spendmeter-operator-7f9c{i}d-x{i}k2p" for i in range(20)]
    priorities = [host_priority(n) for n in names]
    assert len(set(priorities)) == len(names) and min(priorities) > 0
    assert host_priority(names[0]) == priorities[0]  # stable across restarts of the same pod
