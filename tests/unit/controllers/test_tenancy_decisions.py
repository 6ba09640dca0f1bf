"""Two teams, one cloud account: an object of namespace ml never takes, changes, copies or deletes
a cache of namespace team-a unless an administrator granted it, and then only what its
managementPolicies say. Against the in-memory cloud; the same cases run against the real
apiserver and the emulator in tests/integration/test_tenancy.py."""

from __future__ import annotations

from typing import Any

from tests.unit.controllers.test_controllers import (
    HERE,
    NOW,
    DataCacheObject,
    FakeCloud,
    ReplicationObject,
    condition,
    replication_controller,
    settings,
    source_cache,
)

from datacache_operator.api.buckets import BUCKETS_ANNOTATION
from datacache_operator.api.common import MAY_ADOPT_FROM_ANNOTATION
from datacache_operator.controllers.datacache import DataCacheController
from datacache_operator.controllers.replication import ReplicationController
from datacache_operator.reconcile.common import owner_tags

TEAM_A = owner_tags("", "uid-a", "team-a", "their-model")


def namespaces(grants: str | None = None, buckets: str | None = None) -> Any:
    async def read_namespace(name: str) -> dict[str, Any] | None:
        annotations = {MAY_ADOPT_FROM_ANNOTATION: grants} if grants else {}
        annotations |= {BUCKETS_ANNOTATION: buckets} if buckets else {}
        return {"metadata": {"name": name, "annotations": annotations}}

    return read_namespace


def their_cache(cloud: FakeCloud) -> str:
    cache_id = cloud._new(
        HERE, "team-a-token", path="/models/theirs", bucket="team-a", tags=TEAM_A, name="theirs"
    )
    cloud.set(cache_id, status="Available", size=20)
    return cache_id


def controller(
    cloud: FakeCloud, grants: str | None = None, buckets: str | None = "team-a"
) -> DataCacheController:
    return DataCacheController(
        settings(),
        cloud,
        read_secret=None,
        clock=lambda: NOW,
        read_namespace=namespaces(grants, buckets),  # type: ignore[arg-type]
    )


async def test_another_namespaces_cache_is_not_adopted_and_nothing_of_it_shows() -> None:
    cloud = FakeCloud()
    theirs = their_cache(cloud)
    obj = DataCacheObject(dataCacheId=theirs, size=40, deletionPolicy="Delete")
    obj.body["status"] = {"bucket": "left-over"}
    result = await obj.pass_(controller(cloud))
    assert condition(result.status, "Stalled") == ("True", "NotOwned")
    message = next(c["message"] for c in result.status["conditions"] if c["type"] == "Ready")
    assert "namespace team-a" in message and "their-model" not in message
    assert not {"bucket", "path", "size", "status"} & set(obj.body["status"])  # none of their data
    assert cloud.actions() == ["describe"] and cloud.caches[theirs].size == 20

    done, events, _ = await controller(cloud).finalize(obj.body)
    assert done and theirs in cloud.caches  # adopted: observe-only unless the object says more
    assert "delete" not in cloud.actions()


async def test_a_granted_cache_is_adopted_observe_only_by_default_and_changed_only_when_allowed() -> None:
    cloud = FakeCloud()
    theirs = their_cache(cloud)
    obj = DataCacheObject(dataCacheId=theirs, size=40)
    await obj.pass_(controller(cloud, grants="team-a"))
    assert condition(obj.body["status"], "Ready") == ("True", "Available")
    assert "update" not in cloud.actions() and cloud.caches[theirs].tags == TEAM_A

    obj.change(managementPolicies=["Observe", "Update"])
    await obj.pass_(controller(cloud, grants="team-a"))
    assert ("update", HERE, theirs) in cloud.calls


async def test_a_granted_cache_in_a_bucket_not_assigned_here_is_refused_naming_the_bucket() -> None:
    """Its pods could not mount it (the admission policies hold them to their buckets)."""
    cloud = FakeCloud()
    theirs = their_cache(cloud)
    obj = DataCacheObject(dataCacheId=theirs, size=40)
    result = await obj.pass_(controller(cloud, grants="team-a", buckets=None))
    assert condition(result.status, "Stalled") == ("True", "BucketNotAllowed")
    message = next(c["message"] for c in result.status["conditions"] if c["type"] == "Ready")
    assert message.startswith("The adopted data cache's bucket team-a is not a bucket of namespace ml")
    assert BUCKETS_ANNOTATION in message and cloud.actions() == ["describe"]

    await obj.pass_(controller(cloud, grants="team-a", buckets="team-a, shared"))  # assigned later
    assert condition(obj.body["status"], "Ready") == ("True", "Available")


async def test_a_cache_in_another_namespaces_bucket_is_not_created() -> None:
    """The policies refuse it at apply; the operator too, should it be admitted without them."""
    cloud = FakeCloud()
    obj = DataCacheObject(bucket="team-a")
    result = await obj.pass_(controller(cloud, buckets=None))
    assert condition(result.status, "Stalled") == ("True", "BucketNotAllowed")
    assert cloud.actions() == []

    own = DataCacheObject()  # no bucket: the namespace's own, no read of the Namespace needed
    result = await own.pass_(controller(cloud, buckets=None))
    assert [c.bucket for c in cloud.caches.values()] == ["ml"]


async def test_a_forged_status_id_is_never_deleted() -> None:
    """A tenant who can write status points its object at another team's cache."""
    cloud = FakeCloud()
    theirs = their_cache(cloud)
    obj = DataCacheObject(deletionPolicy="Delete")
    obj.body["status"] = {"dataCacheId": theirs, "region": HERE}
    done, events, _ = await controller(cloud).finalize(obj.body)
    assert theirs in cloud.caches and "delete" not in cloud.actions()
    assert [e.reason for e in events] == ["NotOwned"] and done


async def test_another_namespaces_cache_is_not_copied_by_raw_id_until_granted() -> None:
    cloud = FakeCloud()
    theirs = their_cache(cloud)
    obj = ReplicationObject("cn-beijing")
    obj.body["spec"]["source"] = {"dataCacheId": theirs, "region": HERE}
    obj.body["spec"]["destinations"][0]["bucket"] = "ml"  # the source's (the default) is team A's

    def replication(grants: str | None) -> ReplicationController:
        return ReplicationController(
            settings(),
            cloud,
            read_object=None,
            clock=lambda: NOW,
            read_namespace=namespaces(grants),  # type: ignore[arg-type]
        )

    result = await obj.pass_(replication(None))
    assert condition(result.status, "Stalled") == ("True", "NotOwned")
    assert "copy" not in cloud.actions() and "sourceRevision" not in obj.body["status"]

    await obj.pass_(replication("team-a"))  # a grant needs no spec change: the next poll sees it
    assert "copy" in cloud.actions()


async def test_nothing_is_created_where_another_cache_already_is() -> None:
    """Two objects never hold one bucket and path: which cache ECI gives a pod is undocumented."""
    cloud = FakeCloud()
    first = DataCacheObject()
    await first.pass_(controller(cloud))
    second = DataCacheObject()
    second.body["metadata"] |= {"uid": "uid-2", "name": "twin"}
    result = await second.pass_(controller(cloud))
    assert condition(result.status, "Stalled") == ("True", "PathInUse")
    message = next(c["message"] for c in result.status["conditions"] if c["type"] == "Ready")
    assert "(of ml/qwen) is already at bucket ml, path /models/qwen" in message
    assert len(cloud.caches) == 1

    cloud.caches.clear()  # the first one gone: the next poll builds it
    await second.pass_(controller(cloud))
    assert len(cloud.caches) == 1 and "dataCacheId" in second.body["status"]


async def test_no_copy_is_made_where_another_cache_already_is() -> None:
    cloud = FakeCloud()
    _, source = source_cache(cloud)
    squatter = cloud._new("cn-beijing", "theirs", path="/models/qwen", bucket="ml")
    obj = ReplicationObject("cn-beijing")
    await obj.pass_(replication_controller(cloud, source))
    entry = obj.entries()["cn-beijing"]
    assert entry["reason"] == "PathInUse" and squatter in entry["message"]
    assert "copy" not in cloud.actions()
