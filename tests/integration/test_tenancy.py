"""Two teams in two namespaces of one cluster, one cloud account (the emulator): team B cannot
take, change, copy or delete team A's cache; team A's cache is unchanged afterwards (name,
size, tags, data source, existence) and team B's own caches keep working. A re-created object
finds its own cache. Through the real apiserver and the emulator's wire protocol."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.support import Kube, OperatorProcess, wait_for
from tests.integration.test_datacache_lifecycle import datacache, unique
from tests.integration.test_replication import replication, tags_of
from tests.support.controlplane import ControlPlane

from datacache_operator.api.buckets import BUCKETS_ANNOTATION
from datacache_operator.api.common import MAY_ADOPT_FROM_ANNOTATION


@pytest.fixture
def team_b(controlplane: ControlPlane) -> Kube:
    name = f"team-b-{uuid.uuid4().hex[:8]}"
    controlplane.kubectl("create", "namespace", name)
    return Kube(controlplane, name)


@pytest.fixture
def two_teams_operator(
    operator_env: dict[str, str], datacache_crds: list[str], kube: Kube, team_b: Kube, tmp_path: Path
) -> Iterator[OperatorProcess]:
    env = {**operator_env, "DATACACHE_NAMESPACES": f"{kube.namespace},{team_b.namespace}"}
    running = OperatorProcess(env, tmp_path / "operator.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def snapshot(eci: Any, cache_id: str) -> dict[str, Any] | None:
    """What team A would notice of its cache: existence, name, size, tags, data source."""
    cache = eci.cache(cache_id)
    if cache is None:
        return None
    return {
        "name": cache.get("Name"),
        "size": cache.get("Size"),
        "tags": tags_of(cache),
        "source": cache.get("DataSource"),
        "status": cache.get("Status"),
    }


def refused(team: Kube, kind: str, name: str) -> dict[str, Any]:
    obj = team.wait_condition(kind, name, "Stalled", "True", reason="NotOwned")
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


def test_team_b_cannot_adopt_change_copy_or_delete_team_as_cache_until_granted(
    kube: Kube, team_b: Kube, two_teams_operator: OperatorProcess, eci: Any
) -> None:
    team_a = kube
    theirs = unique("model")
    team_a.apply(datacache(theirs))
    cache_id = str(team_a.wait_condition("datacache", theirs, "Ready", "True")["status"]["dataCacheId"])
    before = snapshot(eci, cache_id)
    calls_before = len(eci.calls(action="UpdateDataCache")) + len(eci.calls(action="CopyDataCache"))

    # Adopt by id, with another size and data source, to be deleted with the object.
    grab = unique("grab")
    team_b.apply(
        datacache(
            grab,
            dataCacheId=cache_id,
            size=99,
            deletionPolicy="Delete",
            dataSource={"type": "URL", "options": {"url": "https://team-b.example/weights"}},
        )
    )
    ready = refused(team_b, "datacache", grab)
    assert f"namespace {team_a.namespace}" in ready["message"] and theirs not in ready["message"]
    status = team_b.get("datacache", grab)["status"]  # type: ignore[index]
    assert not {"bucket", "path", "size", "message"} & set(status)

    # Copy by raw id.
    copier = unique("copy")
    team_b.apply(
        replication(copier, {"dataCacheId": cache_id, "region": "cn-hangzhou"}, {"region": "cn-beijing"})
    )
    refused(team_b, "datacachereplication", copier)

    # Deleting team B's objects leaves team A's cache.
    team_b.kubectl("delete", "datacache", grab, "--timeout=60s")
    team_b.kubectl("delete", "datacachereplication", copier, "--timeout=60s")
    assert snapshot(eci, cache_id) == before
    assert len(eci.calls(action="UpdateDataCache")) + len(eci.calls(action="CopyDataCache")) == calls_before

    # A cache of team B's at team A's bucket and path (admitted here without the chart's
    # admission policies, which refuse it at apply): nothing is created.
    squat = unique("squat")
    team_b.apply(datacache(squat, bucket=team_a.namespace, path=f"/models/{theirs}"))
    stalled = team_b.wait_condition("datacache", squat, "Stalled", "True", reason="BucketNotAllowed")
    assert f"bucket {team_a.namespace} is not a bucket of namespace {team_b.namespace}" in str(stalled)

    # Team B's own caches keep working meanwhile.
    own = unique("own")
    team_b.apply(datacache(own))
    team_b.wait_condition("datacache", own, "Ready", "True")

    # An administrator grants team B team A's caches: adopted, observed only by default, and
    # usable once team A's bucket is assigned to team B too (its pods mount it there).
    kube.controlplane.kubectl(
        "annotate", "namespace", team_b.namespace, f"{MAY_ADOPT_FROM_ANNOTATION}={team_a.namespace}"
    )
    watcher = unique("watch")
    team_b.apply(datacache(watcher, dataCacheId=cache_id, size=99))
    team_b.wait_condition("datacache", watcher, "Stalled", "True", reason="BucketNotAllowed")
    kube.controlplane.kubectl(
        "annotate", "namespace", team_b.namespace, f"{BUCKETS_ANNOTATION}={team_a.namespace}"
    )
    adopted = team_b.wait_condition("datacache", watcher, "Ready", "True")
    assert adopted["status"]["dataCacheId"] == cache_id
    team_b.kubectl("delete", "datacache", watcher, "--timeout=60s")
    team_b.kubectl("delete", "datacache", squat, "--timeout=60s")
    assert snapshot(eci, cache_id) == before
    assert [c for c in eci.caches() if c.get("Bucket") == team_a.namespace] == [eci.cache(cache_id)]


def test_two_objects_never_hold_one_bucket_and_path(kube: Kube, operator: OperatorProcess, eci: Any) -> None:
    first, second = unique("first"), unique("second")
    kube.apply(datacache(first))
    cache_id = kube.wait_condition("datacache", first, "Ready", "True")["status"]["dataCacheId"]
    kube.apply(datacache(second, path=f"/models/{first}"))
    stalled = kube.wait_condition("datacache", second, "Stalled", "True", reason="PathInUse")
    message = next(c["message"] for c in stalled["status"]["conditions"] if c["type"] == "Ready")
    assert f"Data cache {cache_id} (of {kube.namespace}/{first}) is already at bucket" in message
    at_path = [c for c in eci.caches() if c.get("Path") == f"/models/{first}"]
    assert [c["DataCacheId"] for c in at_path] == [cache_id]

    # The first one deleted, the second builds at the next poll.
    kube.kubectl("delete", "datacache", first, "--timeout=60s")
    kube.wait_condition("datacache", second, "Ready", "True", timeout=90)


def test_a_re_created_object_finds_its_cache_instead_of_building_another(
    kube: Kube, operator: OperatorProcess, eci: Any
) -> None:
    name = unique("again")
    kube.apply(datacache(name, deletionPolicy="Retain"))
    cache_id = kube.wait_condition("datacache", name, "Ready", "True")["status"]["dataCacheId"]
    kube.kubectl("delete", "datacache", name, "--timeout=60s")
    creates = len(eci.calls(action="CreateDataCache"))

    kube.apply(datacache(name, deletionPolicy="Retain"))  # a new uid: GitOps re-creating it, a restore
    obj = kube.wait_condition("datacache", name, "Ready", "True")
    assert obj["status"]["dataCacheId"] == cache_id
    assert len(eci.calls(action="CreateDataCache")) == creates
    wait_for(lambda: eci.cache(cache_id) is not None, what="the one cache still there")
