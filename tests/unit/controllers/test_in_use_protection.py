"""Deleting what pods still use: the cloud cache (or copy) stays, the status says InUse and
names a pod, and the deletion goes on once the last pod has ended."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datacache_operator.api.conditions import get_condition
from datacache_operator.cloud.models import ObservedCache
from datacache_operator.controllers.datacache import DataCacheController
from datacache_operator.controllers.replication import ReplicationController
from datacache_operator.reconcile.common import owner_tags
from datacache_operator.settings import OperatorSettings


class Cloud:
    """Every cache exists, is Available until deleted and belongs to namespace ml."""

    def __init__(self) -> None:
        self.deleted: list[tuple[str, str]] = []

    async def find_by_tags(self, region: str, tags: Mapping[str, str]) -> list[ObservedCache]:
        return []

    async def describe(self, region: str, data_cache_id: str) -> ObservedCache | None:
        if (region, data_cache_id) in self.deleted:
            return None
        tags = owner_tags("", "uid-1", "ml", "qwen")
        return ObservedCache(data_cache_id=data_cache_id, region=region, status="Available", tags=tags)

    async def delete(self, region: str, data_cache_id: str) -> bool:
        self.deleted.append((region, data_cache_id))
        return True


class Pods:
    """Who uses what: (namespace, cache, region, replication) -> pod names."""

    def __init__(self, users: dict[tuple[str, str, str, str | None], list[str]]) -> None:
        self.by_key = users
        self.asked: list[tuple[str, str, str, str | None]] = []

    async def __call__(self, namespace: str, cache: str, region: str, replication: str | None) -> list[str]:
        self.asked.append((namespace, cache, region, replication))
        return self.by_key.get((namespace, cache, region, replication), [])


def datacache_body() -> dict[str, Any]:
    return {
        "metadata": {"uid": "u1", "namespace": "ml", "name": "qwen", "generation": 1},
        "spec": {"path": "/models/qwen", "region": "cn-hangzhou"},
        "status": {"dataCacheId": "edc-1", "region": "cn-hangzhou"},
    }


async def test_a_datacache_in_use_is_kept_then_deleted_once_its_pods_are_gone():
    cloud = Cloud()
    pods = Pods({("ml", "qwen", "cn-hangzhou", None): ["ml/web-1", "ml/web-2"]})
    controller = DataCacheController(OperatorSettings(), cloud, read_secret=None, users=pods)  # type: ignore[arg-type]

    done, events, status = await controller.finalize(datacache_body())
    assert not done and cloud.deleted == []
    assert status is not None
    ready = get_condition(status["conditions"], "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "InUse")
    assert "ml/web-1" in ready["message"] and [e.reason for e in events] == ["InUse"]

    # Asked again with the same pods: no second event.
    _, events, _ = await controller.finalize(datacache_body())
    assert events == []

    pods.by_key.clear()
    done, events, status = await controller.finalize(datacache_body())
    assert cloud.deleted == [("cn-hangzhou", "edc-1")] and status is None


def replication_body(*regions: str) -> dict[str, Any]:
    return {
        "metadata": {"uid": "u2", "namespace": "ml", "name": "rep", "generation": 1},
        "spec": {
            "source": {"dataCacheRef": {"name": "qwen"}},
            "destinations": [{"region": r} for r in regions],
            "deletionPolicy": "Delete",
        },
        "status": {
            "destinations": [
                {"region": "cn-beijing", "dataCacheId": "edc-bj"},
                {"region": "cn-shanghai", "dataCacheId": "edc-sh"},
            ]
        },
    }


async def test_a_replication_whose_copy_is_in_use_keeps_every_copy():
    cloud = Cloud()
    pods = Pods({("ml", "qwen", "cn-shanghai", "rep"): ["ml/reader"]})
    controller = ReplicationController(OperatorSettings(), cloud, read_object=None, users=pods)  # type: ignore[arg-type]
    done, events, status = await controller.finalize(replication_body("cn-beijing", "cn-shanghai"))
    assert not done and cloud.deleted == []
    assert status is not None
    ready = get_condition(status["conditions"], "Ready")
    assert ready is not None and ready["reason"] == "InUse" and "ml/reader" in ready["message"]
    assert ("ml", "qwen", "cn-beijing", "rep") in pods.asked


async def test_a_removed_destination_in_use_keeps_its_copy():
    cloud = Cloud()
    pods = Pods({("ml", "qwen", "cn-shanghai", "rep"): ["ml/reader"]})

    async def read_object(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None  # the source is gone: only the removal is looked at here

    controller = ReplicationController(OperatorSettings(), cloud, read_object=read_object, users=pods)  # type: ignore[arg-type]
    result = await controller.reconcile(replication_body("cn-beijing"))
    entry = next(d for d in result.status["destinations"] if d["region"] == "cn-shanghai")
    assert entry["reason"] == "InUse" and "ml/reader" in entry["message"]
    assert ("cn-shanghai", "edc-sh") not in cloud.deleted
