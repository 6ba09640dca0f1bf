"""The operator's own Kubernetes calls against the real apiserver where replicas race: every
replica puts the webhook's CA into the configuration at start, at once."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest
from tests.integration.support import Kube, wait_for
from tests.support.controlplane import ControlPlane

from datacache_operator import kube as operator_kube
from datacache_operator.admission.server import CacheResolver
from datacache_operator.api.binding import CacheRequest
from datacache_operator.api.common import DATACACHES
from datacache_operator.settings import OperatorSettings


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
        return list(await asyncio.gather(*(operator_kube.inject_ca(name, ca) for _ in range(8))))

    changed = asyncio.run(replicas())  # before, the losers of the race crashed on a 422
    assert sum(changed) == 3 and all(n in (0, 3) for n in changed)
    found = controlplane.kubectl(
        "get", "mutatingwebhookconfiguration", name, "-o", "jsonpath={.webhooks[*].clientConfig.caBundle}"
    ).stdout.split()
    assert found == [base64.b64encode(ca).decode()] * 3


@pytest.mark.usefixtures("kube_in_process")
def test_the_cluster_id_is_kube_systems_uid(controlplane: ControlPlane) -> None:
    uid = controlplane.kubectl("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}").stdout
    found = asyncio.run(operator_kube.read_namespace("kube-system"))
    assert found is not None and found["metadata"]["uid"] == uid
    assert asyncio.run(operator_kube.read_namespace("no-such-namespace")) is None


def datacache(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "eci.datacache.dev/v1alpha1",
        "kind": "DataCache",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"path": f"/models/{name}", "dataSource": {"type": "URL", "options": {"url": "https://x/y"}}},
    }


@pytest.mark.usefixtures("kube_in_process", "datacache_crds")
def test_the_webhooks_watched_view_follows_the_apiserver(controlplane: ControlPlane, kube: Kube) -> None:
    kube.apply(datacache("before"))
    view = operator_kube.WatchedObjects(DATACACHES, [kube.namespace])
    view.start()
    try:
        wait_for(lambda: view.covers(kube.namespace), what="the first list")
        assert view.get(kube.namespace, "before") is not None
        assert not view.covers("elsewhere")  # another namespace is read from the apiserver
        kube.apply(datacache("after"))
        wait_for(lambda: view.get(kube.namespace, "after"), what="a new object through the watch")
        kube.kubectl("annotate", "datacache", "after", "team=b")
        wait_for(
            lambda: (view.get(kube.namespace, "after") or {})["metadata"]["annotations"].get("team") == "b",
            what="a change through the watch",
        )
        assert "managedFields" not in view.get(kube.namespace, "after")["metadata"]  # type: ignore[index]
        kube.kubectl("delete", "datacache", "before")
        wait_for(lambda: view.get(kube.namespace, "before") is None, what="a deletion through the watch")
        assert [o["metadata"]["name"] for o in view.in_namespace(kube.namespace)] == ["after"]
    finally:
        view.stop()


@pytest.mark.usefixtures("kube_in_process", "datacache_crds")
def test_a_pod_is_admitted_from_the_view_and_a_cache_not_in_it_is_read(kube: Kube) -> None:
    kube.apply(datacache("seen"))
    reads: list[str] = []

    async def read_object(plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        reads.append(name)
        return await operator_kube.get_object(plural, namespace, name)

    def bound(view: operator_kube.WatchedObjects, name: str) -> bool:
        resolver = CacheResolver(OperatorSettings(), read_object, watched={DATACACHES: view})
        ((_, binding),) = asyncio.run(resolver.bindings(kube.namespace, [CacheRequest(name, "/m")]))
        return binding.ready

    view = operator_kube.WatchedObjects(DATACACHES, [kube.namespace])
    view.start()
    try:
        wait_for(lambda: view.get(kube.namespace, "seen"), what="the first list")
        assert bound(view, "seen") is False and reads == []  # not Ready (no operator here), not read
    finally:
        view.stop()
    # Applied a moment ago, not through the watch yet (here: a view never started).
    assert bound(operator_kube.WatchedObjects(DATACACHES, [kube.namespace]), "seen") is False
    assert reads == ["seen"]


@pytest.mark.usefixtures("kube_in_process", "datacache_crds")
def test_the_view_serves_nothing_while_its_watch_is_down_and_comes_back_after(
    controlplane: ControlPlane, kube: Kube
) -> None:
    """With the apiserver away the webhook reads (and fails) rather than trust a view that may
    be old; once it is back the view is listed again, deletions made meanwhile included."""
    from tests.support.controlplane import child_env

    kube.apply(datacache("kept"))
    kube.apply(datacache("deleted-meanwhile"))
    view = operator_kube.WatchedObjects(DATACACHES, [kube.namespace])
    view.RETRY_SECONDS = (0.2, 0.5)
    view.start()
    try:
        wait_for(lambda: view.get(kube.namespace, "deleted-meanwhile"), what="the first list")
        assert controlplane.apiserver is not None
        controlplane.apiserver.stop()
        try:
            wait_for(lambda: not view.covers(kube.namespace), what="the view no longer served")
            assert view.get(kube.namespace, "kept") is None and view.in_namespace(kube.namespace) == []
        finally:
            controlplane.apiserver.start(env=child_env())
            controlplane._wait_ready(time.monotonic() + 60)
        kube.kubectl("delete", "datacache", "deleted-meanwhile")  # before the view lists again, maybe
        wait_for(
            lambda: (
                view.covers(kube.namespace)
                and view.get(kube.namespace, "kept")
                and view.get(kube.namespace, "deleted-meanwhile") is None
            ),
            timeout=60,
            what="the view listed again",
        )
    finally:
        view.stop()
