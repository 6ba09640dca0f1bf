"""The pod webhook's configuration for a local apiserver (`make run`, tests): the chart's
rules, but called by URL on 127.0.0.1 instead of through a Service."""

from __future__ import annotations

from typing import Any

from datacache_operator.admission.server import PATH
from datacache_operator.api.binding import INJECT_LABEL


def webhook_configuration(name: str, port: int, namespace_selector: dict[str, Any]) -> dict[str, Any]:
    """A MutatingWebhookConfiguration without caBundle: the operator puts its CA in."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "pods.eci.datacache.dev",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": f"https://127.0.0.1:{port}{PATH}"},
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "objectSelector": {"matchLabels": {INJECT_LABEL: "true"}},
                "namespaceSelector": namespace_selector,
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": 10,
            }
        ],
    }
