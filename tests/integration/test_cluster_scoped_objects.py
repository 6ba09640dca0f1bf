"""The operator's own Kubernetes calls reach a cluster-scoped kind of our group through the
real apiserver (namespace None): read, list, patch (the finalizer) and the status subresource."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.controlplane import ControlPlane

from datacache_operator import GROUP, VERSION, kube

PLURAL = "toyaccounts"


@pytest.fixture(scope="module")
def cluster_scoped_kind(controlplane: ControlPlane) -> str:
    controlplane.apply(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{PLURAL}.{GROUP}"},
            "spec": {
                "group": GROUP,
                "scope": "Cluster",
                "names": {"kind": "ToyAccount", "plural": PLURAL, "singular": "toyaccount"},
                "versions": [
                    {
                        "name": VERSION,
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
    )
    controlplane.kubectl("wait", "--for=condition=established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
    controlplane.apply(
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ToyAccount", "metadata": {"name": "team-a"}, "spec": {}}
    )
    return PLURAL


@pytest.mark.usefixtures("kube_in_process")
def test_read_list_patch_and_status_of_a_cluster_scoped_object(cluster_scoped_kind: str) -> None:
    async def exercise() -> None:
        found = await kube.get_object(PLURAL, None, "team-a")
        assert found is not None and "namespace" not in found["metadata"]
        assert [o["metadata"]["name"] for o in await kube.list_objects(PLURAL, None)] == ["team-a"]
        finalizer = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": found["metadata"]["resourceVersion"],
            },
            {"op": "add", "path": "/metadata/finalizers", "value": ["eci.datacache.dev/finalizer"]},
        ]
        assert await kube.patch_object(PLURAL, None, "team-a", finalizer) is True
        assert await kube.patch_object(PLURAL, None, "team-a", finalizer) is False  # no longer as seen
        await kube.patch_status(PLURAL, None, "team-a", {"phase": "Ready"})
        again = await kube.get_object(PLURAL, None, "team-a")
        assert again is not None
        assert again["metadata"]["finalizers"] == ["eci.datacache.dev/finalizer"]
        assert again["status"] == {"phase": "Ready"}
        assert await kube.get_object(PLURAL, None, "nobody") is None
        await kube.patch_status(PLURAL, None, "nobody", {"phase": "x"})  # gone: nothing to report on
        removing = [{"op": "replace", "path": "/metadata/finalizers", "value": []}]
        assert await kube.patch_object(PLURAL, None, "team-a", removing) is True

    asyncio.run(exercise())
