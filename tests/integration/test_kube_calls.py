"""The operator's own Kubernetes calls against the real apiserver where replicas race: every
replica puts the webhook's CA into the configuration at start, at once."""

from __future__ import annotations

import asyncio
import base64

import pytest
from tests.support.controlplane import ControlPlane

from datacache_operator import kube


@pytest.mark.usefixtures("kube_in_process")
def test_replicas_putting_the_ca_in_at_once_all_succeed(controlplane: ControlPlane) -> None:
    name = "race-ca-in"
    webhook = {
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"url": "https://127.0.0.1:9/mutate"},
        "failurePolicy": "Ignore",
        "objectSelector": {"matchLabels": {"never": "matches"}},
    }
    controlplane.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{**webhook, "name": f"{n}.race.example"} for n in ("a", "b", "c")],
        }
    )
    ca = b"-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n"

    async def replicas() -> list[int]:
        return list(await asyncio.gather(*(kube.inject_ca(name, ca) for _ in range(8))))

    changed = asyncio.run(replicas())  # before, the losers of the race crashed on a 422
    assert sum(changed) == 3 and all(n in (0, 3) for n in changed)
    found = controlplane.kubectl(
        "get", "mutatingwebhookconfiguration", name, "-o", "jsonpath={.webhooks[*].clientConfig.caBundle}"
    ).stdout.split()
    assert found == [base64.b64encode(ca).decode()] * 3


@pytest.mark.usefixtures("kube_in_process")
def test_the_cluster_id_is_kube_systems_uid(controlplane: ControlPlane) -> None:
    uid = controlplane.kubectl("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}").stdout
    found = asyncio.run(kube.read_namespace("kube-system"))
    assert found is not None and found["metadata"]["uid"] == uid
    assert asyncio.run(kube.read_namespace("no-such-namespace")) is None
