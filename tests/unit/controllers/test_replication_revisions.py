"""DataCacheReplication copies follow the source's current revision make-before-break, against
the in-memory cloud: the copy of the new revision is made while the old copy serves and the
entry still names it; the entry switches in one status write once the new copy is Available; the
old copy goes only once no pod of the region is bound to it; a failed new copy leaves the old one
serving. Where the new copy would sit at the old one's bucket and path, the old is replaced first
as before."""

from __future__ import annotations

import json
from typing import Any

from tests.unit.controllers.test_controllers import (
    NOW,
    FakeCloud,
    ReplicationObject,
    condition,
    settings,
)

from datacache_operator.api.binding import BOUND_ANNOTATION
from datacache_operator.controllers.replication import ReplicationController, copy_users_of

SOURCE_REGION, HERE = "cn-hongkong", "cn-beijing"


class Source:
    """The source DataCache as the replication reads it, and its revisions' caches."""

    def __init__(self, cloud: FakeCloud) -> None:
        self.cloud = cloud
        self.obj: dict[str, Any] = {"metadata": {"name": "qwen"}, "spec": {"region": SOURCE_REGION}}
        self.revision("r1", "/models/qwen")

    def revision(self, name: str, path: str, **options: str) -> str:
        """The DataCache's revision `name` is current (its cache Available at `path`)."""
        cache_id = self.cloud._new(
            SOURCE_REGION,
            f"source-{name}-{path}-{options}",
            path=path,
            bucket="ml",
            data_source_type="URL",
            data_source_options={"url": "https://x/y", **options},
        )
        self.cloud.set(cache_id, status="Available")
        self.obj["status"] = {"dataCacheId": cache_id, "currentRevision": name, "path": path}
        return cache_id

    def reload_in_place(self, **options: str) -> None:
        """updatePolicy InPlace: the same cache (id, path) loads another data source."""
        cache_id = self.obj["status"]["dataCacheId"]
        self.cloud.set(cache_id, data_source_options={"url": "https://x/y", **options})


class Pods:
    """Pods of the destination region bound to each copy id (what the pod lister would find)."""

    def __init__(self) -> None:
        self.bound: dict[str, list[str]] = {}
        self.asked: list[tuple[str, str, str, str]] = []

    async def by_id(self, namespace: str, cache: str, region: str, replication: str) -> dict[str, list[str]]:
        self.asked.append((namespace, cache, region, replication))
        return self.bound


def controller(cloud: FakeCloud, source: Source, pods: Pods) -> ReplicationController:
    async def read_object(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return source.obj

    return ReplicationController(
        settings(),
        cloud,  # type: ignore[arg-type]
        read_object,
        clock=lambda: NOW,
        copy_users=pods.by_id,
    )


def entry(obj: ReplicationObject, region: str = HERE) -> dict[str, Any]:
    return obj.entries()[region]


async def serving(cloud: FakeCloud, obj: ReplicationObject, run: ReplicationController) -> str:
    """Passes until the copy is Available; its id."""
    await obj.pass_(run)
    copy_id = str(entry(obj)["dataCacheId"])
    cloud.set(copy_id, status="Available")
    await obj.pass_(run)
    assert condition(obj.body["status"], "Ready") == ("True", "Available")
    cloud.calls.clear()
    return copy_id


def reasons(result: Any) -> list[str]:
    return [e.reason for e in result.events]


async def test_the_new_revisions_copy_is_made_beside_the_old_which_serves_until_it_takes_over() -> None:
    cloud, pods = FakeCloud(), Pods()
    source = Source(cloud)
    run = controller(cloud, source, pods)
    obj = ReplicationObject(HERE)
    old = await serving(cloud, obj, run)
    assert (entry(obj)["path"], entry(obj)["revision"]) == ("/models/qwen", "r1")
    pods.bound = {old: ["ml/serve-0"]}

    source.revision("r2", "/models/qwen.r2")  # the source switched to its new revision
    result = await obj.pass_(run)
    building = entry(obj)["building"]
    assert building["path"] == "/models/qwen.r2" and building["revision"] == "r2"
    assert building["status"] == "Creating" and building["dataCacheId"] != old
    # The entry still names the old copy, which is Available: new pods of the region get it.
    assert (entry(obj)["dataCacheId"], entry(obj)["status"], entry(obj)["path"]) == (
        old,
        "Available",
        "/models/qwen",
    )
    assert entry(obj)["reason"] == "CopyingRevision" and "serves meanwhile" in entry(obj)["message"]
    assert "failedGeneration" not in entry(obj)
    assert condition(obj.body["status"], "Ready") == ("True", "Available") and result.delay == 1
    assert "delete" not in cloud.actions() and old in cloud.caches
    assert reasons(result) == ["CopyingRevision", "Copying"]
    # Its own ClientToken: not the one the old copy was made with.
    assert building["copyGeneration"] == 2 and entry(obj)["copyGeneration"] == 2

    new = building["dataCacheId"]
    cloud.set(new, status="Loading")
    await obj.pass_(run)
    assert entry(obj)["dataCacheId"] == old and entry(obj)["building"]["status"] == "Loading"

    cloud.set(new, status="Available")
    result = await obj.pass_(run)
    switched = entry(obj)
    assert (switched["dataCacheId"], switched["status"], switched["path"]) == (
        new,
        "Available",
        "/models/qwen.r2",
    )
    assert (
        switched["revision"] == "r2" and switched["sourceDataCacheId"] == source.obj["status"]["dataCacheId"]
    )
    assert switched["sourceRevision"] == obj.body["status"]["sourceRevision"]
    assert "building" not in switched or switched["building"] is None
    assert [(p["dataCacheId"], p["consumers"], p["revision"]) for p in switched["previous"]] == [
        (old, 1, "r1")
    ]
    assert "CopySwitched" in reasons(result) and old in cloud.caches  # a pod still uses the old one
    assert pods.asked[-1] == ("ml", "qwen", HERE, "rep")
    await obj.pass_(run)
    assert old in cloud.caches and ("delete", HERE, old) not in cloud.calls

    pods.bound = {new: ["ml/serve-1"]}  # the last pod on the old copy ended
    result = await obj.pass_(run)
    assert ("delete", HERE, old) in cloud.calls and entry(obj)["previous"][0]["status"] == "Deleting"
    result = await obj.pass_(run)  # ECI no longer lists it
    assert not entry(obj).get("previous") and "CopyDeleted" in reasons(result)
    assert condition(obj.body["status"], "Ready") == ("True", "Available") and result.delay == 30
    assert cloud.actions().count("copy") == 1


async def test_a_destination_path_gets_the_revision_beside_it() -> None:
    cloud, pods = FakeCloud(), Pods()
    source = Source(cloud)
    run = controller(cloud, source, pods)
    obj = ReplicationObject(HERE)
    obj.body["spec"]["destinations"] = [{"region": HERE, "path": "/copies/qwen"}]
    old = await serving(cloud, obj, run)
    assert entry(obj)["path"] == "/copies/qwen"

    source.revision("r2", "/models/qwen.r2")
    await obj.pass_(run)
    new = entry(obj)["building"]["dataCacheId"]
    assert cloud.caches[new].path == "/copies/qwen.r2" and entry(obj)["dataCacheId"] == old
    cloud.set(new, status="Available")
    await obj.pass_(run)
    assert (entry(obj)["dataCacheId"], entry(obj)["path"]) == (new, "/copies/qwen.r2")
    await obj.pass_(run)  # nobody uses the old copy: it goes
    assert old not in cloud.caches
    await obj.pass_(run)
    assert not entry(obj).get("previous") and "move" not in str(cloud.calls)
    assert cloud.actions().count("copy") == 1  # neither copy was taken for moved


async def test_a_failed_new_copy_leaves_the_old_one_serving_until_the_source_moves_on() -> None:
    cloud, pods = FakeCloud(), Pods()
    source = Source(cloud)
    run = controller(cloud, source, pods)
    obj = ReplicationObject(HERE)
    old = await serving(cloud, obj, run)
    source.revision("r2", "/models/qwen.r2")
    await obj.pass_(run)
    broken = entry(obj)["building"]["dataCacheId"]
    cloud.set(broken, status="Failed", last_event_message="quota exceeded")
    result = await obj.pass_(run)
    assert entry(obj)["dataCacheId"] == old and entry(obj)["status"] == "Available"
    assert entry(obj)["reason"] == "RevisionCopyFailed" and "quota exceeded" in entry(obj)["message"]
    assert f"{old} keeps serving" in entry(obj)["message"]
    assert "failedGeneration" not in entry(obj)  # pods of the region are still given the old copy
    assert entry(obj)["building"]["failedGeneration"] == 1
    assert condition(obj.body["status"], "Ready") == ("True", "Available")
    assert condition(obj.body["status"], "RevisionFailed") == ("True", "CopyFailed")
    assert "Warning" in [e.type for e in result.events] and result.delay == 30
    calls = cloud.actions().count("copy")
    await obj.pass_(run)
    assert cloud.actions().count("copy") == calls  # not repeated for the same spec and revision

    source.revision("r3", "/models/qwen.r3")  # fixed upstream: the failed copy goes, r3's is made
    await obj.pass_(run)
    assert ("delete", HERE, broken) in cloud.calls and entry(obj)["dataCacheId"] == old
    assert entry(obj)["building"]["status"] == "Deleting"
    result = await obj.pass_(run)  # ECI no longer lists it: r3's copy is made
    assert reasons(result)[:2] == ["CopyDropped", "CopyingRevision"]
    assert entry(obj)["building"]["revision"] == "r3" and entry(obj)["dataCacheId"] == old
    cloud.set(entry(obj)["building"]["dataCacheId"], status="Available")
    await obj.pass_(run)
    assert entry(obj)["revision"] == "r3" and entry(obj)["path"] == "/models/qwen.r3"
    assert condition(obj.body["status"], "RevisionFailed")[0] == "False"


async def test_a_reconcile_request_tries_a_failed_new_copy_again() -> None:
    cloud, pods = FakeCloud(), Pods()
    source = Source(cloud)
    run = controller(cloud, source, pods)
    obj = ReplicationObject(HERE)
    old = await serving(cloud, obj, run)
    source.revision("r2", "/models/qwen.r2")
    await obj.pass_(run)
    broken = entry(obj)["building"]["dataCacheId"]
    cloud.set(broken, status="Failed")
    await obj.pass_(run)
    obj.body["metadata"]["annotations"]["eci.datacache.dev/reconcile-requested-at"] = "1"
    await obj.pass_(run)
    again = entry(obj)["building"]
    assert broken not in cloud.caches and again["dataCacheId"] not in (broken, old)
    assert again["copyGeneration"] == 3 and entry(obj)["dataCacheId"] == old


async def test_a_lost_status_write_finds_the_new_copy_by_its_tags() -> None:
    cloud, pods = FakeCloud(), Pods()
    source = Source(cloud)
    obj = ReplicationObject(HERE)
    old = await serving(cloud, obj, controller(cloud, source, pods))
    before = json.loads(json.dumps(obj.body["status"]))
    source.revision("r2", "/models/qwen.r2")
    await obj.pass_(controller(cloud, source, pods))
    made = entry(obj)["building"]["dataCacheId"]

    obj.body["status"] = before  # the write was lost, and the operator restarted
    result = await obj.pass_(controller(cloud, source, pods))
    assert entry(obj)["building"]["dataCacheId"] == made and "Recovered" in reasons(result)
    assert cloud.actions().count("copy") == 1 and entry(obj)["dataCacheId"] == old  # no second copy


async def test_a_source_reloaded_in_place_replaces_the_copy_at_the_same_path_first() -> None:
    """updatePolicy InPlace: the new copy would sit where the old one is; ECI may not let two
    caches share a bucket and path, so the old copy goes first, as before revisions."""
    cloud, pods = FakeCloud(), Pods()
    source = Source(cloud)
    run = controller(cloud, source, pods)
    obj = ReplicationObject(HERE)
    old = await serving(cloud, obj, run)
    source.reload_in_place(url="https://x/other")
    result = await obj.pass_(run)
    assert ("delete", HERE, old) in cloud.calls and entry(obj)["dataCacheId"] != old
    assert "building" not in entry(obj) and reasons(result) == ["Replacing", "Copying"]


async def test_a_removed_destination_or_the_deletion_takes_every_copy_of_the_region() -> None:
    cloud, pods = FakeCloud(), Pods()
    source = Source(cloud)
    run = controller(cloud, source, pods)
    obj = ReplicationObject(HERE, "cn-shanghai")
    await obj.pass_(run)
    for item in obj.entries().values():
        cloud.set(item["dataCacheId"], status="Available")
    await obj.pass_(run)
    old = entry(obj)["dataCacheId"]
    pods.bound = {old: ["ml/serve-0"]}
    source.revision("r2", "/models/qwen.r2")
    await obj.pass_(run)
    new = entry(obj)["building"]["dataCacheId"]
    cloud.set(new, status="Available")
    await obj.pass_(run)
    assert entry(obj)["dataCacheId"] == new and entry(obj)["previous"][0]["dataCacheId"] == old
    pods.bound = {}
    # The object goes: every copy of this object, the previous one too.
    obj.body["metadata"]["deletionTimestamp"] = "2026-12-01T12:05:00Z"
    done, _, _ = await run.finalize(obj.body)
    assert not done and ("delete", HERE, old) in cloud.calls and ("delete", HERE, new) in cloud.calls


async def test_a_removed_destination_deletes_its_copy_being_made_too() -> None:
    cloud, pods = FakeCloud(), Pods()
    source = Source(cloud)
    run = controller(cloud, source, pods)
    obj = ReplicationObject(HERE, "cn-shanghai")
    await obj.pass_(run)
    for item in obj.entries().values():
        cloud.set(item["dataCacheId"], status="Available")
    await obj.pass_(run)
    old = entry(obj)["dataCacheId"]
    source.revision("r2", "/models/qwen.r2")
    await obj.pass_(run)
    new = entry(obj)["building"]["dataCacheId"]
    obj.body["spec"]["destinations"] = [{"region": "cn-shanghai"}]
    obj.body["metadata"]["generation"] += 1
    await obj.pass_(run)
    assert ("delete", HERE, old) in cloud.calls and ("delete", HERE, new) in cloud.calls


async def test_copy_users_counts_pods_by_the_copy_id_their_record_names() -> None:
    def pod(name: str, *bound: dict[str, str]) -> dict[str, Any]:
        return {"metadata": {"name": name, "annotations": {BOUND_ANNOTATION: json.dumps(list(bound))}}}

    here = {"name": "qwen", "region": HERE, "bucket": "ml", "path": "/models/qwen", "replication": "rep"}
    pods = [
        pod("a", {**here, "dataCacheId": "edc-1"}),
        pod("b", {**here, "dataCacheId": "edc-2"}),
        pod("c", {**here, "dataCacheId": "edc-1", "replication": "other"}),  # another object's copy
        pod("d", {**here, "dataCacheId": "edc-1", "region": "cn-shanghai"}),
        pod("e", {k: v for k, v in here.items() if k != "replication"} | {"dataCacheId": "edc-9"}),
    ]
    asked: list[tuple[Any, ...]] = []

    async def list_pods(namespace: str | None, labels: str, fields: str | None) -> list[dict[str, Any]]:
        asked.append((namespace, labels, fields))
        return pods

    found = await copy_users_of(list_pods)("ml", "qwen", HERE, "rep")
    assert found == {"edc-1": ["ml/a"], "edc-2": ["ml/b"]}
    assert asked[0][1].endswith(f"={HERE}") and "status.phase" in str(asked[0][2])


async def test_an_old_copy_deleted_outside_meanwhile_gives_way_to_the_new_one() -> None:
    cloud, pods = FakeCloud(), Pods()
    source = Source(cloud)
    run = controller(cloud, source, pods)
    obj = ReplicationObject(HERE)
    old = await serving(cloud, obj, run)
    source.revision("r2", "/models/qwen.r2")
    await obj.pass_(run)
    new = entry(obj)["building"]["dataCacheId"]
    del cloud.caches[old]  # gone outside the operator: the copy being made is the entry's now
    cloud.calls.clear()
    result = await obj.pass_(run)
    assert entry(obj)["dataCacheId"] == new and not entry(obj).get("building")
    assert reasons(result) == ["CopyMissing", "Recovered"] and "copy" not in cloud.actions()
    cloud.set(new, status="Available")
    await obj.pass_(run)
    assert condition(obj.body["status"], "Ready") == ("True", "Available")
    assert entry(obj)["revision"] == "r2"
