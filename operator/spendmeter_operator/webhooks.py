"""The MutatingWebhookConfiguration that makes the API server call the operator for new pods.

It never blocks a pod (``failurePolicy: Ignore``, a short timeout) and is never called for the operator's
own namespace or kube-system (a namespace selector on the ``kubernetes.io/metadata.name`` label that the
API server sets on every namespace), nor for pods the operator already injected. The API server reaches
the operator either through a Service (in a cluster) or a URL (tests, or an operator outside the cluster).
Pure: the operator or the chart writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from spendmeter_operator import options

CONFIGURATION_NAME = "spendmeter"
WEBHOOK_NAME = "inject.pods.spendmeter.io"
HANDLER_ID = "inject"  # the path under the webhook server's URL that the kopf handler answers
TIMEOUT_SECONDS = 5


def configuration(
    client_config: Mapping[str, Any],
    skip_namespaces: Iterable[str],
    name: str = CONFIGURATION_NAME,
    timeout_seconds: int = TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """The configuration for a kopf ``client_config`` (``url`` or ``service``, and ``caBundle``)."""
    client = dict(client_config)
    if "url" in client:
        client["url"] = f"{str(client['url']).rstrip('/')}/{HANDLER_ID}"
    elif "service" in client:
        client["service"] = {**client["service"], "path": f"/{HANDLER_ID}"}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "spendmeter"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "admissionReviewVersions": ["v1"],
                "clientConfig": client,
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "failurePolicy": "Ignore",
                "matchPolicy": "Equivalent",
                "sideEffects": "None",
                "timeoutSeconds": timeout_seconds,
                "reinvocationPolicy": "Never",
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": sorted(set(skip_namespaces)),
                        },
                        # a namespace labelled spendmeter.io/inject=disabled is never even sent to the webhook
                        {
                            "key": options.INJECT,
                            "operator": "NotIn",
                            "values": [options.NAMESPACE_OPT_OUT_VALUE],
                        },
                    ]
                },
                "objectSelector": {
                    "matchExpressions": [{"key": options.INJECTED_LABEL, "operator": "DoesNotExist"}]
                },
            }
        ],
    }
