"""Every step of both controllers against an in-memory cloud (the `CloudClient` protocols are
the seam): which ECI calls a pass makes, the status and conditions it computes, the events.
Milliseconds each, no cluster, no emulator."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from datacache_operator.api.common import DESTINATION_REGION_TAG
from datacache_operator.api.conditions import get_condition
from datacache_operator.cloud import models
from datacache_operator.cloud.errors import EciError
from datacache_operator.cloud.models import ObservedCache
from datacache_operator.controllers.datacache import DataCacheController
from datacache_operator.controllers.replication import ReplicationController
from datacache_operator.reconcile.common import owner_tags
from datacache_operator.settings import OperatorSettings

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
HERE = "cn-hangzhou"


class FakeCloud:
    """ECI in memory: caches by id, ClientTokens honoured, a refusal per action on request."""

    def __init__(self) -> None:
        self.caches: dict[str, ObservedCache] = {}
        self.calls: list[tuple[str, ...]] = []
        self.refuse: dict[str, EciError] = {}
        self._tokens: dict[str, str] = {}
        self._ids = itertools.count(1)

    def _call(self, action: str, *args: str) -> None:
        self.calls.append((action, *args))
        if action in self.refuse:
            raise self.refuse[action]

    def actions(self) -> list[str]:
        return [c[0] for c in self.calls]

    def set(self, cache_id: str, **fields: Any) -> None:
        self.caches[cache_id] = self.caches[cache_id].model_copy(update=fields)

    def _new(self, region: str, token: str, **fields: Any) -> str:
        if token in self._tokens:
            return self._tokens[token]
        cache_id = f"edc-{next(self._ids)}"
        self._tokens[token] = cache_id
        self.caches[cache_id] = ObservedCache(
            data_cache_id=cache_id, region=region, status="Creating", **fields
        )
        return cache_id

    async def describe(self, region: str, data_cache_id: str) -> ObservedCache | None:
        self._call("describe", region, data_cache_id)
        found = self.caches.get(data_cache_id)
        return found if found is not None and found.region == region else None

    async def find_by_tags(self, region: str, tags: Mapping[str, str]) -> list[ObservedCache]:
        self._call("find_by_tags", region)
        return [
            c
            for c in self.caches.values()
            if c.region == region and all(c.tags.get(k) == v for k, v in tags.items())
        ]

    async def find_at(self, region: str, bucket: str, path: str) -> list[ObservedCache]:
        self._call("find_at", region)
        return [c for c in self.caches.values() if (c.region, c.bucket, c.path) == (region, bucket, path)]

    async def create(self, region: str, request: models.CreateRequest, client_token: str) -> str:
        self._call("create", region)
        source = request.data_source
        return self._new(
            region,
            client_token,
            bucket=request.bucket,
            path=request.path,
            size=request.size,
            name=request.name,
            tags=request.tags,
            data_source_type=source.type if source else None,
            data_source_options=dict(source.options) if source else {},
        )

    async def copy(
        self, source_region: str, source_id: str, request: models.CopyRequest, client_token: str
    ) -> str:
        self._call("copy", request.destination_region)
        source = self.caches[source_id]
        return self._new(
            request.destination_region,
            client_token,
            bucket=request.bucket or source.bucket,
            path=request.path or source.path,
            tags=request.tags,
        )

    async def update(self, region: str, data_cache_id: str, request: models.UpdateRequest) -> None:
        self._call("update", region, data_cache_id)
        self.set(data_cache_id, status="Updating")

    async def delete(self, region: str, data_cache_id: str) -> bool:
        self._call("delete", region, data_cache_id)
        return self.caches.pop(data_cache_id, None) is not None

    def server_now(self, region: str) -> datetime | None:
        return None


def condition(status: Mapping[str, Any], type_: str) -> tuple[str, str]:
    found = get_condition(status.get("conditions"), type_) or {}
    return found.get("status", ""), found.get("reason", "")


def settings() -> OperatorSettings:
    return OperatorSettings(poll_interval_loading=1, poll_interval_stable=30, poll_jitter=0)


class DataCacheObject:
    """One DataCache as the apiserver would hold it, its status carried from pass to pass."""

    def __init__(self, created: datetime = NOW + timedelta(minutes=1), **spec: Any) -> None:
        self.body: dict[str, Any] = {
            "metadata": {
                "uid": "uid-1",
                "namespace": "ml",
                "name": "qwen",
                "generation": 1,
                "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "annotations": {},
            },
            "spec": {
                "path": "/models/qwen",
                "dataSource": {"type": "URL", "options": {"url": "https://x/y"}},
                **spec,
            },
            "status": {},
        }

    def change(self, **spec: Any) -> None:
        self.body["spec"].update(spec)
        self.body["metadata"]["generation"] += 1

    async def pass_(self, controller: DataCacheController) -> Any:
        result = await controller.reconcile(self.body)
        self.body["status"] = {k: v for k, v in result.status.items() if v is not None}
        return result


def datacache_controller(cloud: FakeCloud) -> DataCacheController:
    return DataCacheController(settings(), cloud, read_secret=None, clock=lambda: NOW)  # type: ignore[arg-type]


async def test_create_wait_and_ready():
    cloud, obj = FakeCloud(), DataCacheObject()
    controller = datacache_controller(cloud)
    result = await obj.pass_(controller)
    # A re-created object finds its cache; none other may be at its bucket and path.
    assert cloud.actions() == ["find_at", "create"]  # one describe at its bucket and path
    assert obj.body["status"]["status"] == "Creating" and obj.body["status"]["cacheGeneration"] == 1
    assert [e.reason for e in result.events] == ["Creating"] and result.delay == 1

    cache_id = obj.body["status"]["dataCacheId"]
    cloud.set(cache_id, status="Loading", progress="40%")
    await obj.pass_(controller)
    assert condition(obj.body["status"], "Ready") == ("False", "Loading")

    cloud.set(cache_id, status="Available")
    result = await obj.pass_(controller)
    assert condition(obj.body["status"], "Ready") == ("True", "Available")
    assert [e.reason for e in result.events] == ["Available"] and result.delay == 30
    assert cloud.actions().count("create") == 1


async def ready(cloud: FakeCloud, obj: DataCacheObject, controller: DataCacheController) -> str:
    await obj.pass_(controller)
    cache_id = str(obj.body["status"]["dataCacheId"])
    cloud.set(cache_id, status="Available")
    await obj.pass_(controller)
    cloud.calls.clear()
    return cache_id


async def test_a_changed_retention_updates_the_cache_in_place():
    cloud, obj = FakeCloud(), DataCacheObject(retentionDays=7)
    controller = datacache_controller(cloud)
    cache_id = await ready(cloud, obj, controller)
    obj.change(retentionDays=30)
    result = await obj.pass_(controller)
    assert ("update", HERE, cache_id) in cloud.calls and "create" not in cloud.actions()
    assert obj.body["status"]["retentionDays"] == 30 and [e.reason for e in result.events] == ["Updating"]


async def test_a_cache_deleted_outside_is_built_again_with_a_new_token():
    cloud, obj = FakeCloud(), DataCacheObject()
    controller = datacache_controller(cloud)
    cache_id = await ready(cloud, obj, controller)
    del cloud.caches[cache_id]
    result = await obj.pass_(controller)
    assert [e.reason for e in result.events] == ["CacheMissing", "Creating"]
    assert obj.body["status"]["dataCacheId"] != cache_id and obj.body["status"]["cacheGeneration"] == 2


async def test_a_lost_id_is_recovered_by_tag_not_created_again():
    cloud = FakeCloud()
    obj = DataCacheObject()
    lost = cloud._new(
        HERE, "lost-token", bucket="ml", path="/models/qwen", tags=owner_tags("", "uid-1", "ml", "qwen")
    )
    result = await obj.pass_(datacache_controller(cloud))
    assert obj.body["status"]["dataCacheId"] == lost and "create" not in cloud.actions()
    assert [e.reason for e in result.events] == ["Recovered"]


async def test_a_re_created_object_finds_its_cache_and_not_a_copy_or_another_namespaces():
    """Deleted with Retain and applied again (a new uid): the same namespace and name own it."""
    cloud = FakeCloud()
    at = {"bucket": "ml", "path": "/models/qwen"}  # where its create put it
    kept = cloud._new(HERE, "t1", **at, tags=owner_tags("", "old-uid", "ml", "qwen"))
    copy_tags = {**owner_tags("", "rep-uid", "ml", "qwen"), DESTINATION_REGION_TAG: HERE}
    cloud._new(HERE, "t2", **at, tags=copy_tags)  # a replication's copy, same name
    cloud._new(HERE, "t3", **at, tags=owner_tags("", "uid-b", "team-b", "qwen"))
    obj = DataCacheObject()
    result = await obj.pass_(datacache_controller(cloud))
    assert obj.body["status"]["dataCacheId"] == kept and "create" not in cloud.actions()
    assert [e.reason for e in result.events] == ["Recovered"]


async def test_a_failed_build_stalls_and_is_replaced_after_a_spec_change():
    cloud, obj = FakeCloud(), DataCacheObject()
    controller = datacache_controller(cloud)
    await obj.pass_(controller)
    failed_id = obj.body["status"]["dataCacheId"]
    cloud.set(failed_id, status="Failed", last_event_message="disk full")
    result = await obj.pass_(controller)
    assert condition(obj.body["status"], "Stalled") == ("True", "Failed")
    assert [e.reason for e in result.events] == ["Failed"]

    obj.change(size=40)
    result = await obj.pass_(controller)
    assert ("delete", HERE, failed_id) in cloud.calls and cloud.actions().count("create") == 2
    assert [e.reason for e in result.events] == ["Replacing", "Creating"]


async def test_a_terminal_error_stalls_with_the_code_and_is_not_repeated_for_the_same_spec():
    cloud, obj = FakeCloud(), DataCacheObject()
    cloud.refuse["create"] = EciError("Forbidden.RAM", "no permission", http_status=403)
    controller = datacache_controller(cloud)
    result = await obj.pass_(controller)
    assert condition(obj.body["status"], "Stalled") == ("True", "ForbiddenRAM")
    assert [e.reason for e in result.events] == ["ForbiddenRAM"] and result.delay == 30
    calls = len(cloud.calls)
    await obj.pass_(controller)
    assert len(cloud.calls) == calls  # no call until the spec changes or a reconcile request
    obj.body["metadata"]["annotations"]["eci.datacache.dev/reconcile-requested-at"] = "1"
    await obj.pass_(controller)
    assert len(cloud.calls) > calls


async def test_a_retryable_error_backs_off_without_stalling():
    cloud, obj = FakeCloud(), DataCacheObject()
    cloud.refuse["create"] = EciError("Throttling.User", "slow down", http_status=400)
    result = await obj.pass_(datacache_controller(cloud))
    assert condition(obj.body["status"], "Synced") == ("False", "ThrottlingUser")
    assert condition(obj.body["status"], "Stalled")[0] != "True" and 0 < result.delay <= 30
    assert result.events == []


async def test_paused_makes_no_call():
    cloud, obj = FakeCloud(), DataCacheObject()
    obj.body["metadata"]["annotations"]["eci.datacache.dev/paused"] = "true"
    await obj.pass_(datacache_controller(cloud))
    assert cloud.calls == [] and condition(obj.body["status"], "Synced") == ("False", "ReconcilePaused")


async def test_an_adopted_id_that_does_not_exist_stalls():
    cloud, obj = FakeCloud(), DataCacheObject(dataCacheId="edc-missing")
    await obj.pass_(datacache_controller(cloud))
    assert (
        condition(obj.body["status"], "Stalled") == ("True", "NotFound") and "create" not in cloud.actions()
    )


async def test_an_expired_cache_is_not_built_again():
    cloud, obj = FakeCloud(), DataCacheObject()
    controller = datacache_controller(cloud)
    cache_id = await ready(cloud, obj, controller)
    cloud.set(cache_id, expire_time=NOW - timedelta(minutes=1))
    await obj.pass_(controller)  # the expiry time is read into status
    del cloud.caches[cache_id]  # ECI removed it when its retention ended
    await obj.pass_(controller)
    assert condition(obj.body["status"], "Stalled") == ("True", "Expired") and "create" not in cloud.actions()


# ---- DataCacheReplication ------------------------------------------------------------------


class ReplicationObject:
    def __init__(self, *regions: str, source: str = "qwen") -> None:
        self.body: dict[str, Any] = {
            "metadata": {
                "uid": "rep-1",
                "namespace": "ml",
                "name": "rep",
                "generation": 1,
                "creationTimestamp": (NOW + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "annotations": {},
            },
            "spec": {
                "source": {"dataCacheRef": {"name": source}},
                "destinations": [{"region": r} for r in regions],
                "deletionPolicy": "Delete",
            },
            "status": {},
        }

    async def pass_(self, controller: ReplicationController) -> Any:
        result = await controller.reconcile(self.body)
        self.body["status"] = {k: v for k, v in result.status.items() if v is not None}
        return result

    def entries(self) -> dict[str, dict[str, Any]]:
        return {d["region"]: d for d in self.body["status"].get("destinations") or []}


def source_cache(cloud: FakeCloud, status: str = "Available") -> tuple[str, dict[str, Any]]:
    cache_id = cloud._new("cn-hongkong", "source", path="/models/qwen", bucket="ml")
    cloud.set(cache_id, status=status)
    obj = {
        "metadata": {"name": "qwen"},
        "spec": {"region": "cn-hongkong"},
        "status": {"dataCacheId": cache_id},
    }
    return cache_id, obj


def replication_controller(cloud: FakeCloud, source: dict[str, Any] | None) -> ReplicationController:
    async def read_object(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return source

    async def no_pods(namespace: str, cache: str, region: str, replication: str) -> dict[str, list[str]]:
        return {}

    return ReplicationController(
        settings(),
        cloud,  # type: ignore[arg-type]
        read_object,
        clock=lambda: NOW,
        copy_users=no_pods,
    )


async def test_copies_are_made_once_per_region_and_ready_when_all_are_available():
    cloud = FakeCloud()
    _, source = source_cache(cloud)
    obj = ReplicationObject("cn-beijing", "cn-shanghai")
    controller = replication_controller(cloud, source)
    await obj.pass_(controller)
    assert sorted(c[1] for c in cloud.calls if c[0] == "copy") == ["cn-beijing", "cn-shanghai"]
    assert obj.body["status"]["readyDestinations"] == "0/2"
    for entry in obj.entries().values():
        cloud.set(entry["dataCacheId"], status="Available")
    result = await obj.pass_(controller)
    assert condition(obj.body["status"], "Ready") == ("True", "Available")
    assert obj.body["status"]["readyDestinations"] == "2/2" and "Available" in [
        e.reason for e in result.events
    ]
    assert cloud.actions().count("copy") == 2


async def test_nothing_is_copied_while_the_source_is_missing_or_loading():
    cloud = FakeCloud()
    obj = ReplicationObject("cn-beijing")
    await obj.pass_(replication_controller(cloud, None))
    assert condition(obj.body["status"], "Ready") == ("False", "SourceNotFound")
    _, source = source_cache(cloud, status="Loading")
    await obj.pass_(replication_controller(cloud, source))
    assert condition(obj.body["status"], "Ready") == ("False", "SourceNotReady")
    assert "copy" not in cloud.actions()


async def test_a_terminal_error_on_the_source_stalls_and_is_not_repeated():
    cloud = FakeCloud()
    _, source = source_cache(cloud)
    cloud.refuse["describe"] = EciError("Forbidden.RAM", "no permission", http_status=403)
    obj = ReplicationObject("cn-beijing")
    controller = replication_controller(cloud, source)
    result = await obj.pass_(controller)
    assert condition(obj.body["status"], "Stalled") == ("True", "ForbiddenRAM")
    assert [e.reason for e in result.events] == ["ForbiddenRAM"] and result.delay == 30
    calls = len(cloud.calls)
    await obj.pass_(controller)
    assert len(cloud.calls) == calls


async def test_a_failed_copy_stalls_and_a_removed_destination_deletes_its_copy():
    cloud = FakeCloud()
    _, source = source_cache(cloud)
    obj = ReplicationObject("cn-beijing", "cn-shanghai")
    controller = replication_controller(cloud, source)
    await obj.pass_(controller)
    entries = obj.entries()
    cloud.set(entries["cn-beijing"]["dataCacheId"], status="Available")
    cloud.set(entries["cn-shanghai"]["dataCacheId"], status="Failed", last_event_message="quota")
    await obj.pass_(controller)
    assert condition(obj.body["status"], "Stalled") == ("True", "CopyFailed")

    shanghai = entries["cn-shanghai"]["dataCacheId"]
    obj.body["spec"]["destinations"] = [{"region": "cn-beijing"}]
    obj.body["metadata"]["generation"] += 1
    await obj.pass_(controller)
    assert ("delete", "cn-shanghai", shanghai) in cloud.calls


@pytest.mark.parametrize(
    ("change", "action"), [({"name": "renamed"}, "update"), ({"path": "/moved"}, "copy")]
)
async def test_a_destination_change_updates_or_replaces_its_copy(change: dict[str, str], action: str):
    cloud = FakeCloud()
    _, source = source_cache(cloud)
    obj = ReplicationObject("cn-beijing")
    controller = replication_controller(cloud, source)
    await obj.pass_(controller)
    first = obj.entries()["cn-beijing"]["dataCacheId"]
    cloud.set(first, status="Available")
    await obj.pass_(controller)
    cloud.calls.clear()
    obj.body["spec"]["destinations"] = [{"region": "cn-beijing", **change}]
    obj.body["metadata"]["generation"] += 1
    for _ in range(3):
        await obj.pass_(controller)
    assert action in cloud.actions()
    if action == "copy":  # a new bucket or path: the old copy goes, a new one is made
        assert ("delete", "cn-beijing", first) in cloud.calls
        assert obj.entries()["cn-beijing"]["dataCacheId"] != first
