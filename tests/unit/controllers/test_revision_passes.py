"""Revisions of a DataCache against the in-memory cloud: a new data source is built beside the
current cache, which serves until the new one is Available and takes over in one status write;
a failed build leaves the current one serving; superseded revisions go once no pod uses them.
The same runs end to end on the virtual node in tests/e2e."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from tests.unit.controllers.test_controllers import NOW, DataCacheObject, FakeCloud, condition, settings

from datacache_operator.cloud import hubs
from datacache_operator.controllers.datacache import DataCacheController

QWEN = {"type": "URL", "options": {"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2-0.5B"}}


def source(revision: str) -> dict[str, Any]:
    return {"type": "URL", "options": {**QWEN["options"], "revision": revision}}


class Pods:
    """Which pods are bound to which cloud cache id (what the pod binder would list)."""

    def __init__(self) -> None:
        self.bound: dict[str, list[str]] = {}

    async def by_id(self, namespace: str, cache: str, region: str) -> dict[str, list[str]]:
        return self.bound


class Hub:
    """Hugging Face's revision API: which commit each branch is at (never the network)."""

    def __init__(self) -> None:
        self.commits: dict[str, str] = {}
        self.down = False
        self.asked: list[str] = []

    async def resolve(
        self, repo_source: str, repo_id: str, revision: str | None, settings: Any, **_: Any
    ) -> Any:
        requested = revision or "main"
        self.asked.append(requested)
        if self.down:
            raise hubs.HubError("HubUnreachable", "huggingface.co did not answer")
        commit = self.commits.get(requested) or hashlib.sha1(requested.encode()).hexdigest()
        return hubs.PinnedSource("HuggingFace", repo_id, requested, commit)


def controller(
    cloud: FakeCloud, pods: Pods | None = None, hub: Hub | None = None, **options: Any
) -> DataCacheController:
    return DataCacheController(
        settings(),
        cloud,
        read_secret=None,  # type: ignore[arg-type]
        clock=options.pop("clock", lambda: NOW),
        revision_users=(pods or Pods()).by_id,
        resolve=(hub or Hub()).resolve,
        **options,
    )


async def available(cloud: FakeCloud, obj: DataCacheObject, run: DataCacheController) -> None:
    """Passes until every cache of the object is Available (ECI finishing its builds)."""
    for _ in range(4):
        for cache in list(cloud.caches.values()):
            if cache.status in ("Creating", "Loading", "Updating"):
                cloud.set(cache.data_cache_id, status="Available")
        await obj.pass_(run)


def revisions(obj: DataCacheObject) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in obj.body["status"].get("revisions") or []}


def conditions_named(obj: DataCacheObject, type_: str) -> dict[str, Any]:
    return next((c for c in obj.body["status"]["conditions"] if c["type"] == type_), {})


async def test_a_new_source_is_built_beside_the_current_cache_which_serves_until_it_takes_over() -> None:
    cloud, pods = FakeCloud(), Pods()
    run = controller(cloud, pods)
    obj = DataCacheObject(dataSource=source("main"), revisionHistoryLimit=0)
    await available(cloud, obj, run)
    first = obj.body["status"]["dataCacheId"]
    assert obj.body["status"]["currentRevision"] == "r1" and obj.body["status"]["path"] == "/models/qwen"
    pods.bound = {first: ["ml/serve-0"]}

    obj.change(dataSource=source("v2"))
    result = await obj.pass_(run)
    building = revisions(obj)["r2"]
    assert building["path"] == "/models/qwen.r2" and building["status"] == "Creating"
    assert "(from v2)" in building["source"] and "(from main)" in revisions(obj)["r1"]["source"]
    assert obj.body["status"]["dataCacheId"] == first  # new pods still get r1, which is Available
    assert condition(obj.body["status"], "Ready") == ("True", "Available")
    assert "update" not in cloud.actions()  # the serving cache is never reloaded in place
    assert [e.reason for e in result.events] == ["BuildingRevision", "Creating"]

    cloud.set(building["dataCacheId"], status="Available")
    result = await obj.pass_(run)
    status = obj.body["status"]
    assert (status["currentRevision"], status["dataCacheId"]) == ("r2", building["dataCacheId"])
    assert status["path"] == "/models/qwen.r2" and "RevisionCurrent" in [e.reason for e in result.events]
    assert revisions(obj)["r1"]["consumers"] == 1 and first in cloud.caches  # a pod still uses it

    pods.bound = {}  # the last pod on r1 ended
    await obj.pass_(run)
    assert first not in cloud.caches and revisions(obj)["r1"]["status"] == "Deleting"
    result = await obj.pass_(run)  # ECI no longer lists it
    assert list(revisions(obj)) == ["r2"] and "RevisionDeleted" in [e.reason for e in result.events]


async def test_a_failed_revision_leaves_the_current_one_serving_until_a_new_spec() -> None:
    cloud = FakeCloud()
    run = controller(cloud)
    obj = DataCacheObject(dataSource=source("main"))
    await available(cloud, obj, run)
    obj.change(dataSource=source("broken"))
    await obj.pass_(run)
    broken = revisions(obj)["r2"]["dataCacheId"]
    cloud.set(broken, status="Failed", last_event_message="repo not found: Qwen/Qwen2-0.5B@broken")
    result = await obj.pass_(run)
    assert condition(obj.body["status"], "Ready") == ("True", "Available")
    failed = conditions_named(obj, "RevisionFailed")
    assert (failed["status"], failed["reason"]) == ("True", "Failed")
    assert "repo not found" in failed["message"] and "r1 keeps serving" in failed["message"]
    assert [(e.reason, e.message) for e in result.events] == [
        ("Failed", "Revision r2: repo not found: Qwen/Qwen2-0.5B@broken")
    ]
    await obj.pass_(run)
    assert cloud.actions().count("create") == 2  # the failed build is not repeated for this spec

    obj.change(dataSource=source("v3"))  # fixed: the failed cache is replaced by one of the new spec
    await obj.pass_(run)
    assert broken not in cloud.caches and cloud.actions().count("create") == 3
    await available(cloud, obj, run)
    assert obj.body["status"]["currentRevision"] == "r2"
    assert conditions_named(obj, "RevisionFailed")["status"] == "False"


async def test_going_back_to_the_current_source_drops_the_build() -> None:
    cloud = FakeCloud()
    run = controller(cloud)
    obj = DataCacheObject(dataSource=source("main"))
    await available(cloud, obj, run)
    obj.change(dataSource=source("v2"))
    await obj.pass_(run)
    building = revisions(obj)["r2"]["dataCacheId"]
    obj.change(dataSource=source("main"))
    await obj.pass_(run)
    result = await obj.pass_(run)
    assert building not in cloud.caches and list(revisions(obj)) == ["r1"]
    assert "RevisionDropped" in [e.reason for e in result.events]


async def test_the_newest_unused_revisions_are_kept_up_to_the_history_limit() -> None:
    cloud = FakeCloud()
    run = controller(cloud)
    obj = DataCacheObject(dataSource=source("v1"))  # revisionHistoryLimit: 1 by default
    await available(cloud, obj, run)
    for version in ("v2", "v3"):
        obj.change(dataSource=source(version))
        await available(cloud, obj, run)
    assert obj.body["status"]["currentRevision"] == "r3"
    assert list(revisions(obj)) == ["r2", "r3"]  # r1 deleted, r2 kept for a rollback
    assert len(cloud.caches) == 2


async def test_what_does_not_reload_the_data_changes_the_current_cache_in_place() -> None:
    cloud = FakeCloud()
    run = controller(cloud)
    obj = DataCacheObject(dataSource=source("main"))
    await available(cloud, obj, run)
    obj.change(retentionDays=7)
    await obj.pass_(run)
    assert "update" in cloud.actions() and list(revisions(obj)) == ["r1"]

    obj.change(size=40)  # a new size reloads the data: a new revision
    await obj.pass_(run)
    assert revisions(obj)["r2"]["size"] == 40


async def test_in_place_updates_reload_the_one_cache() -> None:
    cloud = FakeCloud()
    run = controller(cloud)
    obj = DataCacheObject(dataSource=source("main"), updatePolicy="InPlace")
    await available(cloud, obj, run)
    obj.change(dataSource=source("v2"))
    await obj.pass_(run)
    assert "update" in cloud.actions() and len(cloud.caches) == 1
    assert obj.body["status"].get("revisions") is None


async def test_deleting_the_object_deletes_every_revision() -> None:
    cloud = FakeCloud()
    run = controller(cloud)
    obj = DataCacheObject(dataSource=source("main"), deletionPolicy="Delete")
    await available(cloud, obj, run)
    obj.change(dataSource=source("v2"))
    await obj.pass_(run)
    assert len(cloud.caches) == 2
    done, _, _ = await run.finalize(obj.body)
    assert not cloud.caches


class Users:
    """The pods naming the cache (what the pod binder would list), for the idle cache's wake-up."""

    def __init__(self) -> None:
        self.pods: list[str] = []

    async def __call__(self, namespace: str, cache: str, region: str, replication: str | None) -> list[str]:
        return self.pods


async def test_an_unused_cache_scales_to_zero_and_back_when_a_pod_asks() -> None:
    cloud, users, clock = FakeCloud(), Users(), [NOW]
    run = controller(cloud, clock=lambda: clock[0], users=users)
    obj = DataCacheObject(dataSource=source("main"), expireAfterUnused="2h")
    await available(cloud, obj, run)
    first = obj.body["status"]["dataCacheId"]
    obj.body["status"]["consumers"] = 3  # pods use it: never idle, however long
    clock[0] = NOW + timedelta(hours=5)
    await obj.pass_(run)
    assert first in cloud.caches and "unusedSince" not in obj.body["status"]

    obj.body["status"]["consumers"] = 0  # the last pod ended
    await obj.pass_(run)
    clock[0] += timedelta(hours=1, minutes=59)
    await obj.pass_(run)
    assert first in cloud.caches  # not yet two hours unused

    clock[0] += timedelta(minutes=2)
    result = await obj.pass_(run)
    assert obj.body["status"].get("dataCacheId") is None  # new pods wait at the gate from now on
    assert condition(obj.body["status"], "Ready") == ("False", "Idle")
    assert obj.body["status"]["path"] == "/models/qwen"  # where a pod that asks will find it
    assert "Idle" in [e.reason for e in result.events]
    assert first in cloud.caches  # deleted once Idle is stored and still no pod names it
    await obj.pass_(run)
    await obj.pass_(run)  # ECI no longer lists it
    assert first not in cloud.caches
    calls = len(cloud.calls)
    await obj.pass_(run)
    assert len(cloud.calls) == calls  # idle: no call until a pod names it

    users.pods = ["ml/serve-0"]  # a gated pod names it
    result = await obj.pass_(run)
    assert "Waking" in [e.reason for e in result.events] and cloud.actions()[-1] == "create"
    await available(cloud, obj, run)
    assert condition(obj.body["status"], "Ready") == ("True", "Available")
    assert obj.body["status"]["dataCacheId"] != first and obj.body["status"]["path"] == "/models/qwen"


async def test_opted_in_workloads_are_rolled_once_the_new_revision_is_current() -> None:
    cloud, rolls = FakeCloud(), []
    refuse = [True]

    async def roll(namespace: str, cache: str, revision: str) -> list[str]:
        rolls.append((namespace, cache, revision))
        if refuse[0]:
            raise PermissionError("deployments.apps is forbidden")
        return ["Deployment/serve"]

    run = controller(cloud, roll=roll)
    obj = DataCacheObject(dataSource=source("main"))
    await available(cloud, obj, run)
    assert rolls == [] and obj.body["status"]["rolledOutRevision"] == "r1"  # nothing rolled onto r1

    obj.change(dataSource=source("v2"))
    await obj.pass_(run)
    assert rolls == []  # r2 is only being built
    for cache in list(cloud.caches.values()):
        cloud.set(cache.data_cache_id, status="Available")
    result = await obj.pass_(run)  # r2 takes over in this pass's status, not yet stored
    assert rolls == [] and result.delay == 1  # pods the roll makes must be bound to r2: next pass
    result = await obj.pass_(run)
    assert rolls == [("ml", "qwen", "r2")] and obj.body["status"]["rolledOutRevision"] == "r1"
    assert "RolloutFailed" in [e.reason for e in result.events]

    refuse[0] = False  # RBAC granted: the next pass rolls
    result = await obj.pass_(run)
    assert rolls[-1] == ("ml", "qwen", "r2") and obj.body["status"]["rolledOutRevision"] == "r2"
    assert [e.message for e in result.events if e.reason == "RolledOut"] == [
        "Rolling Deployment/serve onto revision r2."
    ]
    await obj.pass_(run)
    assert len(rolls) == 2  # done: not again


async def test_a_hub_branch_is_built_from_the_commit_it_is_at_and_followed_when_it_moves() -> None:
    cloud, hub, clock = FakeCloud(), Hub(), [NOW]
    hub.commits["main"] = "a" * 40
    run = controller(cloud, hub=hub, clock=lambda: clock[0])
    obj = DataCacheObject(dataSource=source("main"), refresh={"interval": "1h"}, revisionHistoryLimit=0)
    await available(cloud, obj, run)
    (built,) = cloud.caches.values()
    assert built.data_source_options["revision"] == "a" * 40  # what ECI loads: the commit
    assert obj.body["status"]["sourceCommit"] == "a" * 40
    assert f"revision={'a' * 40} (from main)" in revisions(obj)["r1"]["source"]
    assert condition(obj.body["status"], "SourcePinned") == ("True", "Pinned")
    asked = len(hub.asked)
    await obj.pass_(run)
    assert len(hub.asked) == asked  # asked once per branch, not every pass

    hub.commits["main"] = "b" * 40  # someone pushed to main
    clock[0] += timedelta(minutes=59)
    await obj.pass_(run)
    assert "r2" not in revisions(obj)  # not an hour yet
    clock[0] += timedelta(minutes=2)
    result = await obj.pass_(run)
    assert "SourceMoved" in [e.reason for e in result.events]
    assert revisions(obj)["r2"]["source"].startswith(
        f"URL repoSource=HuggingFace/Model repoId=Qwen/Qwen2-0.5B revision={'b' * 40}"
    )
    await available(cloud, obj, run)
    assert obj.body["status"]["currentRevision"] == "r2"
    assert [c.data_source_options["revision"] for c in cloud.caches.values()] == ["b" * 40]


async def test_a_hub_that_does_not_answer_leaves_the_pinned_commit_in_use() -> None:
    cloud, hub, clock = FakeCloud(), Hub(), [NOW]
    hub.down = True
    run = controller(cloud, hub=hub, clock=lambda: clock[0])
    obj = DataCacheObject(dataSource=source("main"), refresh={"interval": "1h"})
    await available(cloud, obj, run)  # the first build does not wait for the hub
    pinned = conditions_named(obj, "SourcePinned")
    assert (pinned["status"], pinned["reason"]) == ("False", "HubUnreachable")
    assert "built from main as it is, unpinned" in pinned["message"]
    assert condition(obj.body["status"], "Ready") == ("True", "Available")

    hub.down = False
    clock[0] += timedelta(minutes=2)  # asked again after a minute
    await available(cloud, obj, run)
    assert obj.body["status"]["currentRevision"] == "r2"  # now built from the commit
    hub.down = True
    clock[0] += timedelta(hours=2)
    await obj.pass_(run)
    pinned = conditions_named(obj, "SourcePinned")
    assert pinned["status"] == "False" and "stays in use" in pinned["message"]
    assert obj.body["status"]["currentRevision"] == "r2" and "r3" not in revisions(obj)


async def test_a_pod_naming_an_idle_cache_before_it_is_deleted_gets_it_back() -> None:
    """The pod binder counts consumers every 30 s: a pod admitted just before the cache went
    Idle is found before anything is deleted, and the cache serves again as it is."""
    cloud, users, clock = FakeCloud(), Users(), [NOW]
    run = controller(cloud, clock=lambda: clock[0], users=users)
    obj = DataCacheObject(dataSource=source("main"), expireAfterUnused="2h")
    await available(cloud, obj, run)
    first = obj.body["status"]["dataCacheId"]
    clock[0] += timedelta(hours=3)
    await obj.pass_(run)
    assert condition(obj.body["status"], "Ready") == ("False", "Idle")
    users.pods = ["ml/just-admitted"]
    await available(cloud, obj, run)
    assert obj.body["status"]["dataCacheId"] == first and first in cloud.caches
    assert cloud.actions().count("create") == 1 and condition(obj.body["status"], "Ready")[0] == "True"


async def test_a_superseded_revision_is_deleted_only_once_the_takeover_is_stored() -> None:
    """The webhook binds from the stored object: until it shows r2 current, pods may still be
    bound to r1, so r1 (even with revisionHistoryLimit 0) outlives the takeover's own pass."""
    cloud = FakeCloud()
    run = controller(cloud)
    obj = DataCacheObject(dataSource=source("main"), revisionHistoryLimit=0)
    await available(cloud, obj, run)
    first = obj.body["status"]["dataCacheId"]
    obj.change(dataSource=source("v2"))
    await obj.pass_(run)
    cloud.set(revisions(obj)["r2"]["dataCacheId"], status="Available")
    result = await run.reconcile(obj.body)  # the takeover, as computed: not stored yet
    assert result.status["currentRevision"] == "r2" and first in cloud.caches
    assert "delete" not in cloud.actions()
