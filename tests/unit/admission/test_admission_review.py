"""The AdmissionReview around the pure patch: only pod CREATEs are bound, a controller's pod
(no metadata.namespace) is read in the request's namespace, denials carry the reason; and
the webhook's certificate names the hosts the apiserver calls."""

from __future__ import annotations

import base64
import json
from typing import Any

from datacache_operator.admission import certs
from datacache_operator.admission.server import CacheResolver, review
from datacache_operator.settings import OperatorSettings


def resolver(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> tuple[CacheResolver, list[tuple[str, str, str]]]:
    reads: list[tuple[str, str, str]] = []

    async def read_object(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        reads.append((plural, namespace, name))
        return objects.get((namespace, name))

    async def list_objects(plural: str, namespace: str) -> list[dict[str, Any]]:
        return []

    return CacheResolver(OperatorSettings(), read_object, list_objects), reads


def request(operation: str = "CREATE", namespace: str = "ml") -> dict[str, Any]:
    pod = {
        "metadata": {"generateName": "web-", "labels": {"eci.datacache.dev/inject": "true"},
                     "annotations": {"eci.datacache.dev/caches": "qwen:/m"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }  # fmt: skip
    return {
        "request": {
            "uid": "u-1",
            "kind": {"kind": "Pod"},
            "operation": operation,
            "namespace": namespace,
            "object": pod,
        }
    }


READY = {
    "metadata": {"name": "qwen", "namespace": "ml"},
    "spec": {"path": "/models/qwen"},
    "status": {"region": "cn-hangzhou", "conditions": [{"type": "Ready", "status": "True"}]},
}


async def test_a_create_is_answered_with_a_json_patch_read_in_the_requests_namespace():
    chosen, reads = resolver({("ml", "qwen"): READY})
    answer, result = await review(request(), chosen)
    response = answer["response"]
    assert (response["uid"], response["allowed"], response["patchType"], result) == (
        "u-1",
        True,
        "JSONPatch",
        "bound",
    )
    patch = json.loads(base64.b64decode(response["patch"]))
    assert {
        "op": "add",
        "path": "/metadata/annotations/k8s.aliyun.com~1eci-data-cache-bucket",
        "value": "ml",  # the namespace's own bucket
    } in patch
    assert reads == [("datacaches", "ml", "qwen")]


async def test_other_operations_pass_untouched_and_a_missing_cache_is_denied_with_its_name():
    chosen, reads = resolver({})
    answer, result = await review(request("UPDATE"), chosen)
    assert answer["response"] == {"uid": "u-1", "allowed": True} and result == "skipped" and reads == []
    answer, result = await review(request(), chosen)
    assert answer["response"]["allowed"] is False and result == "denied"
    assert answer["response"]["status"]["message"] == "DataCache qwen not found in namespace ml"


def test_the_serving_certificate_names_its_hosts_and_is_signed_by_its_ca():
    made = certs.generate(["svc.ns.svc", "127.0.0.1"])
    assert made.covers(["svc.ns.svc", "127.0.0.1"]) and not made.covers(["other.ns.svc"])
    again = certs.ServingCertificate.from_secret_data(made.as_secret_data())
    assert again == made
    assert certs.ServingCertificate.from_secret_data({"ca.crt": made.ca}) is None  # not issued yet

    from cryptography import x509

    ca = x509.load_pem_x509_certificate(made.ca)
    cert = x509.load_pem_x509_certificate(made.cert)
    cert.verify_directly_issued_by(ca)
    assert b"PRIVATE KEY" in made.key and b"PRIVATE KEY" not in made.cert


def test_the_serving_certificate_covers_service_names_longer_than_a_common_name_may_be():
    # `helm install eci-datacache ... -n datacache-system`: the webhook Service's name is 65
    # characters, past RFC 5280's 64 for a common name; the operator exited at start-up.
    host = "eci-datacache-eci-datacache-operator-webhook.datacache-system.svc"
    assert len(host) > 64
    made = certs.generate([host, f"{host}.cluster.local"])
    assert made.covers([host, f"{host}.cluster.local"])
