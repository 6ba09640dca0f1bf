"""DataCacheReplication end to end: the operator process, the real apiserver, the ECI emulator."""

from __future__ import annotations

import uuid
from typing import Any

import yaml
from tests.integration.support import REPO, Kube, OperatorProcess, wait_for

from datacache_operator import API_VERSION

SOURCE_REGION = "cn-hongkong"
OWNER_UID_TAG = "eci.datacache.dev/owner-uid"
DESTINATION_REGION_TAG = "eci.datacache.dev/destination-region"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def source_cache(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "DataCache",
        "metadata": {"name": name},
        "spec": {
            "region": SOURCE_REGION,
            "path": f"/models/{name}",
            "dataSource": {
                "type": "URL",
                "options": {"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2-0.5B"},
            },
        },
    }


def replication(
    name: str, source: dict[str, Any], *destinations: dict[str, Any], **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "DataCacheReplication",
        "metadata": {"name": name},
        "spec": {"source": source, "destinations": list(destinations), **spec},
    }


def ref(name: str) -> dict[str, Any]:
    return {"dataCacheRef": {"name": name}}


def tags_of(cache: dict[str, Any]) -> dict[str, str]:
    tags = cache.get("Tags") or []
    if isinstance(tags, dict):
        return dict(tags)
    return {t["Key"]: t["Value"] for t in tags}


def copies_owned_by(eci: Any, uid: str, region: str) -> list[dict[str, Any]]:
    return [c for c in eci.caches(region=region) if tags_of(c).get(OWNER_UID_TAG) == uid]


def ready_source(kube: Kube, name: str) -> str:
    kube.apply(source_cache(name))
    obj = kube.wait_condition("datacache", name, "Ready", "True")
    return str(obj["status"]["dataCacheId"])


def destinations(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["region"]: d for d in obj["status"].get("destinations") or []}


def test_copies_to_two_regions_and_is_ready_only_when_all_are_available(
    kube: Kube, operator: OperatorProcess, eci: Any
):
    source = unique("src")
    source_id = ready_source(kube, source)
    name = unique("rep")
    slow_path = f"/copies/{name}"
    eci.add_rule("stall", path=slow_path, regionId="cn-shanghai", operations=["copy"])
    kube.apply(
        replication(
            name,
            ref(source),
            {"region": "cn-beijing", "retentionDays": 7, "tags": {"team": "ml"}},
            {"region": "cn-shanghai", "path": slow_path},
        )
    )

    def beijing_available() -> dict[str, Any] | None:
        obj = kube.get("datacachereplication", name) or {}
        entry = destinations(obj).get("cn-beijing") if obj.get("status") else None
        return obj if entry and entry.get("status") == "Available" else None

    obj = wait_for(beijing_available, timeout=60, what="the cn-beijing copy to be Available")
    assert kube.condition("datacachereplication", name, "Ready")["status"] == "False"  # type: ignore[index]
    assert obj["status"]["readyDestinations"] == "1/2"
    assert destinations(obj)["cn-shanghai"]["status"] != "Available"

    eci.clear_rules()
    obj = kube.wait_condition("datacachereplication", name, "Ready", "True")
    status = obj["status"]
    assert status["sourceDataCacheId"] == source_id and status["sourceRegion"] == SOURCE_REGION
    assert status["readyDestinations"] == "2/2"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    uid = obj["metadata"]["uid"]
    for region, entry in destinations(obj).items():
        assert entry["status"] == "Available" and entry["sourceDataCacheId"] == source_id
        owned = copies_owned_by(eci, uid, region)
        assert [c["DataCacheId"] for c in owned] == [entry["dataCacheId"]], region
        assert tags_of(owned[0])[DESTINATION_REGION_TAG] == region
    beijing = copies_owned_by(eci, uid, "cn-beijing")[0]
    assert tags_of(beijing)["team"] == "ml"
    assert copies_owned_by(eci, uid, "cn-shanghai")[0]["Path"] == slow_path

    copy_calls = [c for c in eci.calls(action="CopyDataCache") if c["params"].get("DataCacheId") == source_id]
    assert sorted(c["params"]["DestinationRegionId"] for c in copy_calls) == ["cn-beijing", "cn-shanghai"]
    assert all(c["params"].get("ClientToken") for c in copy_calls)

    columns = kube.kubectl("get", "edcr", name).stdout.splitlines()
    assert columns[0].split() == ["NAME", "READY", "SOURCE", "DESTINATIONS", "AGE"]
    assert source_id in columns[1] and "2/2" in columns[1]


def test_waits_for_a_missing_then_loading_source(kube: Kube, operator: OperatorProcess, eci: Any):
    source = unique("late")
    name = unique("rep")
    kube.apply(replication(name, ref(source), {"region": "cn-beijing"}))
    obj = kube.wait_condition("datacachereplication", name, "Ready", "False", "SourceNotFound")
    assert obj["status"]["readyDestinations"] == "0/1"

    eci.add_rule("stall", path=f"/models/{source}", regionId=SOURCE_REGION, operations=["create"])
    kube.apply(source_cache(source))
    kube.wait_condition("datacachereplication", name, "Ready", "False", "SourceNotReady")
    assert not copies_owned_by(eci, obj["metadata"]["uid"], "cn-beijing")

    eci.clear_rules()
    obj = kube.wait_condition("datacachereplication", name, "Ready", "True", timeout=90)
    assert len(copies_owned_by(eci, obj["metadata"]["uid"], "cn-beijing")) == 1
    events = kube.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}").stdout
    assert "SourceNotFound" in events


def test_a_failed_copy_is_reported_while_the_other_succeeds(kube: Kube, operator: OperatorProcess, eci: Any):
    source = unique("src")
    ready_source(kube, source)
    name = unique("rep")
    bad_path = f"/copies/{name}-bad"
    eci.add_rule("fail", "disk full in the destination", path=bad_path, operations=["copy"])
    kube.apply(
        replication(name, ref(source), {"region": "cn-beijing"}, {"region": "cn-shanghai", "path": bad_path})
    )
    obj = kube.wait_condition("datacachereplication", name, "Stalled", "True", "CopyFailed")
    assert kube.condition("datacachereplication", name, "Ready")["reason"] == "CopyFailed"  # type: ignore[index]
    entries = destinations(obj)
    assert entries["cn-beijing"]["status"] == "Available"
    assert entries["cn-shanghai"]["status"] == "Failed"
    assert entries["cn-shanghai"]["reason"] == "CopyFailed"
    assert "disk full" in entries["cn-shanghai"]["message"]
    assert obj["status"]["readyDestinations"] == "1/2"
    shanghai_copies = [c for c in eci.calls(action="CopyDataCache") if c["params"].get("Path") == bad_path]
    assert len(shanghai_copies) == 1

    # Whatever broke it is fixed; a reconcile request (not a spec change) tries again.
    eci.clear_rules()
    kube.kubectl("annotate", "edcr", name, "eci.datacache.dev/reconcile-requested-at=retry-1")
    obj = kube.wait_condition("datacachereplication", name, "Ready", "True", timeout=90)
    assert obj["status"]["lastHandledReconcileAt"] == "retry-1"
    assert obj["metadata"]["generation"] == 1
    shanghai = destinations(obj)["cn-shanghai"]
    assert (
        shanghai["status"] == "Available" and shanghai["dataCacheId"] != entries["cn-shanghai"]["dataCacheId"]
    )
    assert len([c for c in eci.calls(action="CopyDataCache") if c["params"].get("Path") == bad_path]) == 2
    wait_for(lambda: eci.cache(entries["cn-shanghai"]["dataCacheId"]) is None, what="the failed copy deleted")


def test_adding_and_removing_destinations(kube: Kube, operator: OperatorProcess, eci: Any):
    source = unique("src")
    ready_source(kube, source)
    name = unique("rep")
    kube.apply(replication(name, ref(source), {"region": "cn-beijing"}, deletionPolicy="Delete"))
    obj = kube.wait_condition("datacachereplication", name, "Ready", "True")
    uid = obj["metadata"]["uid"]
    beijing_id = destinations(obj)["cn-beijing"]["dataCacheId"]

    kube.apply(
        replication(
            name, ref(source), {"region": "cn-beijing"}, {"region": "cn-shanghai"}, deletionPolicy="Delete"
        )
    )

    def two_ready() -> dict[str, Any] | None:
        found = kube.get("datacachereplication", name) or {}
        status = found.get("status") or {}
        ok = status.get("readyDestinations") == "2/2" and status.get("observedGeneration") == 2
        return found if ok else None

    obj = wait_for(two_ready, timeout=60, what="both copies Available")
    assert destinations(obj)["cn-beijing"]["dataCacheId"] == beijing_id
    assert len(copies_owned_by(eci, uid, "cn-shanghai")) == 1

    kube.apply(replication(name, ref(source), {"region": "cn-shanghai"}, deletionPolicy="Delete"))
    wait_for(lambda: eci.cache(beijing_id) is None, timeout=60, what=f"{beijing_id} deleted")

    def beijing_gone_from_status() -> dict[str, Any] | None:
        found = kube.get("datacachereplication", name) or {}
        regions = set(destinations(found)) if found.get("status") else set()
        return found if regions == {"cn-shanghai"} else None

    obj = wait_for(beijing_gone_from_status, timeout=60, what="cn-beijing to leave the status")
    kube.wait_condition("datacachereplication", name, "Ready", "True")
    assert len(copies_owned_by(eci, uid, "cn-shanghai")) == 1


def test_deletion_policy_delete_removes_the_copies(kube: Kube, operator: OperatorProcess, eci: Any):
    source_id = ready_source(kube, unique("src"))
    name = unique("rep")
    raw = {"dataCacheId": source_id, "region": SOURCE_REGION}
    kube.apply(
        replication(name, raw, {"region": "cn-beijing"}, {"region": "cn-shanghai"}, deletionPolicy="Delete")
    )
    obj = kube.wait_condition("datacachereplication", name, "Ready", "True")
    ids = [d["dataCacheId"] for d in obj["status"]["destinations"]]

    kube.kubectl("delete", "datacachereplication", name, "--timeout=90s")
    assert kube.get("datacachereplication", name) is None
    for cache_id in ids:
        assert eci.cache(cache_id) is None, cache_id
    assert eci.cache(source_id) is not None  # the source is not the replication's to delete


def test_deletion_policy_retain_keeps_the_copies(kube: Kube, operator: OperatorProcess, eci: Any):
    source = unique("src")
    ready_source(kube, source)
    name = unique("rep")
    kube.apply(replication(name, ref(source), {"region": "cn-beijing"}, deletionPolicy="Retain"))
    obj = kube.wait_condition("datacachereplication", name, "Ready", "True")
    (copy_id,) = [d["dataCacheId"] for d in obj["status"]["destinations"]]

    kube.kubectl("delete", "datacachereplication", name, "--timeout=60s")
    assert kube.get("datacachereplication", name) is None
    assert eci.cache(copy_id)["Status"] == "Available"  # type: ignore[index]


def rejected(kube: Kube, obj: dict[str, Any]) -> str:
    result = kube.controlplane.kubectl(
        "apply", "-n", kube.namespace, "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj), check=False
    )
    assert result.returncode != 0, f"accepted: {obj['spec']}"
    return result.stderr


def test_cel_rules_reject_invalid_specs(kube: Kube, datacache_crds: list[str]):
    raw = {"dataCacheId": "edc-1", "region": SOURCE_REGION}
    both = {**raw, "dataCacheRef": {"name": "src"}}
    assert "exactly one of dataCacheRef or dataCacheId" in rejected(
        kube, replication("r", both, {"region": "cn-beijing"})
    )
    assert "exactly one of dataCacheRef or dataCacheId" in rejected(
        kube, replication("r", {}, {"region": "cn-beijing"})
    )
    assert "region is required with dataCacheId" in rejected(
        kube, replication("r", {"dataCacheId": "edc-1"}, {"region": "cn-beijing"})
    )
    assert "differ from the source region" in rejected(kube, replication("r", raw, {"region": SOURCE_REGION}))
    assert "path must start with '/'" in rejected(
        kube, replication("r", raw, {"region": "cn-beijing", "path": "models/x"})
    )
    duplicate = rejected(kube, replication("r", raw, {"region": "cn-beijing"}, {"region": "cn-beijing"}))
    assert "Duplicate value" in duplicate
    assert "destinations" in rejected(kube, replication("r", raw))  # at least one destination


def test_cel_rules_hold_destination_tags_and_names_to_alibaba_clouds_rules(
    kube: Kube, datacache_crds: list[str]
):
    raw = {"dataCacheId": "edc-1", "region": SOURCE_REGION}

    def destination(**fields: Any) -> dict[str, Any]:
        return replication("r", raw, {"region": "cn-beijing", **fields})

    full = {f"{index:03d}".ljust(128, "k"): "v" * 128 for index in range(16)}
    too_many = rejected(kube, destination(tags=full))
    assert "spec.destinations[0].tags: Invalid value" in too_many
    assert "at most 15 tags: ECI allows 20 on a cache and the operator adds 5" in too_many
    for tags, expected in [
        ({"k" * 129: "v"}, "a tag key is 1 to 128 characters long"),
        ({"team": "v" * 129}, "spec.destinations[0].tags.team: Too long"),
        ({"Aliyun-team": "ml"}, "spec.destinations[0].tags: Forbidden: a tag key must not begin with aliyun or acs:"),
        ({"docs": "http://example.com"}, "spec.destinations[0].tags: Forbidden: a tag key or value must not contain"),
    ]:  # fmt: skip
        assert expected in rejected(kube, destination(tags=tags)), tags
    assert "spec.destinations[0].name: Too long" in rejected(kube, destination(name="n" * 129))
    full.popitem()
    fits = destination(tags=full, name="n" * 128)  # 15 tags as long as ECI allows, a 128-character name
    kube.controlplane.kubectl(
        "apply", "-n", kube.namespace, "--dry-run=server", "-f", "-", input=yaml.safe_dump(fits)
    )


def test_example_is_accepted_by_the_apiserver(kube: Kube, datacache_crds: list[str]):
    path = REPO / "examples" / "replication-hongkong-to-mainland.yaml"
    kube.kubectl("apply", "--dry-run=server", "-f", str(path))


def test_retryable_faults_during_copies_are_ridden_out(kube: Kube, operator: OperatorProcess, eci: Any):
    source = unique("src")
    ready_source(kube, source)
    eci.set_faults(fault_500_rate=0.3, fault_503_rate=0.1, fault_throttle_rate=0.3, actions=["CopyDataCache"])
    name = unique("rep")
    kube.apply(replication(name, ref(source), {"region": "cn-beijing"}, {"region": "cn-shanghai"}))
    obj = kube.wait_condition("datacachereplication", name, "Ready", "True", timeout=120)
    uid = obj["metadata"]["uid"]
    for region in ("cn-beijing", "cn-shanghai"):
        assert len(copies_owned_by(eci, uid, region)) == 1, region


def test_operator_killed_right_after_a_copy_makes_one_copy_per_destination(
    kube: Kube, operator_env: dict[str, str], datacache_crds: list[str], eci: Any, tmp_path: Any
):
    running = OperatorProcess(operator_env, tmp_path / "operator.log")
    running.start()
    try:
        source = unique("src")
        ready_source(kube, source)
        names = [unique("crash") for _ in range(3)]
        before = len(eci.calls(action="CopyDataCache"))
        for name in names:  # each at its own path: two caches never share a bucket and path
            path = f"/copies/{name}"
            kube.apply(
                replication(
                    name,
                    ref(source),
                    {"region": "cn-beijing", "path": path},
                    {"region": "cn-shanghai", "path": path},
                )
            )
        wait_for(lambda: len(eci.calls(action="CopyDataCache")) > before, interval=0.01, what="a copy call")
        running.kill()
        running.start()
        for name in names:
            obj = kube.wait_condition("datacachereplication", name, "Ready", "True", timeout=90)
            for region in ("cn-beijing", "cn-shanghai"):
                assert len(copies_owned_by(eci, obj["metadata"]["uid"], region)) == 1, (name, region)
    finally:
        running.stop()


def test_lost_copy_responses_never_make_a_second_copy(kube: Kube, operator: OperatorProcess, eci: Any):
    """The copy took effect but its reply was lost: the retry (same token) or the tag lookup finds it."""
    source = unique("src")
    source_id = ready_source(kube, source)
    # Every copy reply is lost: the next pass must find the copy by its tags, not copy again.
    eci.set_faults(fault_drop_rate=1.0, drop_after_apply=True, actions=["CopyDataCache"])
    name = unique("rep")
    kube.apply(replication(name, ref(source), {"region": "cn-beijing"}, {"region": "cn-shanghai"}))
    obj = kube.wait_condition("datacachereplication", name, "Ready", "True", timeout=120)
    uid = obj["metadata"]["uid"]
    for region, entry in destinations(obj).items():
        assert [c["DataCacheId"] for c in copies_owned_by(eci, uid, region)] == [entry["dataCacheId"]]
    copy_calls = [c for c in eci.calls(action="CopyDataCache") if c["params"].get("DataCacheId") == source_id]
    assert sorted(c["params"]["DestinationRegionId"] for c in copy_calls) == ["cn-beijing", "cn-shanghai"]
    events = kube.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}").stdout
    assert "Recovered" in events


def test_spec_changes_update_a_copy_or_replace_it(kube: Kube, operator: OperatorProcess, eci: Any):
    source = unique("src")
    ready_source(kube, source)
    name = unique("rep")
    kube.apply(replication(name, ref(source), {"region": "cn-beijing"}, {"region": "cn-shanghai"}))
    obj = kube.wait_condition("datacachereplication", name, "Ready", "True")
    uid = obj["metadata"]["uid"]
    before = {region: entry["dataCacheId"] for region, entry in destinations(obj).items()}

    moved_path = f"/copies/{name}"
    kube.apply(
        replication(
            name,
            ref(source),
            {"region": "cn-beijing", "name": f"{name}-bj", "retentionDays": 30, "tags": {"team": "ml"}},
            {"region": "cn-shanghai", "path": moved_path},
        )
    )

    def settled() -> dict[str, Any] | None:
        found = kube.get("datacachereplication", name) or {}
        status = found.get("status") or {}
        entries = destinations(found) if status else {}
        ok = (
            status.get("observedGeneration") == 2
            and status.get("readyDestinations") == "2/2"
            and entries.get("cn-shanghai", {}).get("dataCacheId") not in (None, before["cn-shanghai"])
            and tags_of(eci.cache(entries.get("cn-beijing", {}).get("dataCacheId", "")) or {}).get("team")
            == "ml"
        )
        return found if ok else None

    try:
        obj = wait_for(settled, timeout=180, what="the update and the replacement to settle")
    except AssertionError as error:  # say where it stood, for whoever reads a failure
        raise AssertionError(
            f"{error}\nstatus: {(kube.get('datacachereplication', name) or {}).get('status')}\n"
            f"operator log (tail):\n{operator.log()[-4000:]}"
        ) from None
    kube.wait_condition("datacachereplication", name, "Ready", "True")
    beijing = destinations(obj)["cn-beijing"]
    assert beijing["dataCacheId"] == before["cn-beijing"]  # updated in place
    updates = [
        c
        for c in eci.calls(action="UpdateDataCache")
        if c["params"].get("DataCacheId") == beijing["dataCacheId"]
    ]
    assert updates and updates[-1]["params"].get("Name") == f"{name}-bj"
    assert str(updates[-1]["params"].get("RetentionDays")) == "30" and beijing["retentionDays"] == 30
    assert "Path" not in updates[-1]["params"]
    assert eci.cache(beijing["dataCacheId"])["Name"] == f"{name}-bj"  # type: ignore[index]

    wait_for(lambda: eci.cache(before["cn-shanghai"]) is None, timeout=60, what="the old copy deleted")
    shanghai = copies_owned_by(eci, uid, "cn-shanghai")
    assert [c["DataCacheId"] for c in shanghai] == [destinations(obj)["cn-shanghai"]["dataCacheId"]]
    assert shanghai[0]["Path"] == moved_path


def test_a_reloaded_or_recreated_source_refreshes_the_copies(kube: Kube, operator: OperatorProcess, eci: Any):
    """The copies follow the source's current revision, make-before-break."""
    source = unique("src")
    first_source_id = ready_source(kube, source)
    name = unique("rep")
    kube.apply(replication(name, ref(source), {"region": "cn-beijing"}))
    obj = kube.wait_condition("datacachereplication", name, "Ready", "True")
    uid = obj["metadata"]["uid"]
    first = destinations(obj)["cn-beijing"]
    assert first["sourceRevision"] == obj["status"]["sourceRevision"]

    def refreshed(previous: dict[str, Any]) -> dict[str, Any] | None:
        found = kube.get("datacachereplication", name) or {}
        status = found.get("status") or {}
        entry = destinations(found).get("cn-beijing", {}) if status else {}
        ok = (
            entry.get("status") == "Available"
            and entry.get("sourceRevision") not in (None, previous["sourceRevision"])
            and entry.get("sourceRevision") == status.get("sourceRevision")
            and entry.get("dataCacheId") != previous["dataCacheId"]
        )
        return found if ok else None

    # Reloaded from another model: the DataCache builds revision r2 beside r1 (a new id at
    # spec.path + ".r2"), and the copy of r2 is made beside the first copy, which the entry keeps
    # naming (new pods of the region get it) until the new copy is Available.
    new_path = f"/models/{source}.r2"
    eci.add_rule("stall", path=new_path, regionId="cn-beijing", operations=["copy"])
    reloaded = source_cache(source)
    reloaded["spec"]["dataSource"]["options"]["repoId"] = "Qwen/Qwen2-1.5B"
    kube.apply(reloaded)

    def building() -> dict[str, Any] | None:
        found = kube.get("datacachereplication", name) or {}
        entry = destinations(found).get("cn-beijing", {}) if found.get("status") else {}
        made = (entry.get("building") or {}).get("dataCacheId")
        return entry if made and eci.cache(made) is not None else None

    entry = wait_for(building, timeout=120, what="the copy of revision r2 being made")
    assert entry["dataCacheId"] == first["dataCacheId"] and entry["status"] == "Available"
    assert entry["reason"] == "CopyingRevision" and entry["building"]["revision"] == "r2"
    assert eci.cache(entry["building"]["dataCacheId"])["Path"] == new_path  # type: ignore[index]
    assert eci.cache(first["dataCacheId"]) is not None  # the old copy serves meanwhile
    assert kube.condition("datacachereplication", name, "Ready")["status"] == "True"  # type: ignore[index]
    eci.clear_rules()
    obj = wait_for(lambda: refreshed(first), timeout=120, what="the copy refreshed after the reload")
    second = destinations(obj)["cn-beijing"]
    source_now = kube.get("datacache", source) or {}
    assert second["sourceDataCacheId"] == source_now["status"]["dataCacheId"] != first_source_id
    assert (second["path"], second["revision"]) == (new_path, "r2")
    assert second["dataCacheId"] == entry["building"]["dataCacheId"]  # the copy made beside it
    wait_for(lambda: eci.cache(first["dataCacheId"]) is None, what="the superseded copy deleted")
    wait_for(
        lambda: not destinations(kube.get("datacachereplication", name) or {})["cn-beijing"].get("previous"),
        what="the superseded copy gone from the status",
    )
    assert [c["DataCacheId"] for c in copies_owned_by(eci, uid, "cn-beijing")] == [second["dataCacheId"]]

    # Re-created: a new source cache (new id) under the same DataCache name.
    kube.kubectl("delete", "datacache", source, "--wait=true", "--timeout=60s")
    recreated_id = ready_source(kube, source)
    assert recreated_id != first_source_id
    obj = wait_for(lambda: refreshed(second), timeout=120, what="the copy refreshed after the re-creation")
    third = destinations(obj)["cn-beijing"]
    assert third["sourceDataCacheId"] == recreated_id == obj["status"]["sourceDataCacheId"]
    kube.wait_condition("datacachereplication", name, "Ready", "True")
    wait_for(lambda: eci.cache(second["dataCacheId"]) is None, what="the copy of the old source deleted")
    assert [c["DataCacheId"] for c in copies_owned_by(eci, uid, "cn-beijing")] == [third["dataCacheId"]]


def test_a_failed_copy_of_a_new_revision_leaves_the_old_copy_serving(
    kube: Kube, operator: OperatorProcess, eci: Any
):
    source = unique("src")
    ready_source(kube, source)
    name = unique("rep")
    own_path = f"/copies/{name}"
    kube.apply(replication(name, ref(source), {"region": "cn-beijing", "path": own_path}))
    obj = kube.wait_condition("datacachereplication", name, "Ready", "True")
    first = destinations(obj)["cn-beijing"]
    assert (first["path"], first["revision"]) == (own_path, "r1")

    eci.add_rule("fail", "quota exceeded", path=f"{own_path}.r2", regionId="cn-beijing", operations=["copy"])
    reloaded = source_cache(source)
    reloaded["spec"]["dataSource"]["options"]["repoId"] = "Qwen/Qwen2-1.5B"
    kube.apply(reloaded)
    obj = kube.wait_condition("datacachereplication", name, "RevisionFailed", "True", timeout=120)
    entry = destinations(obj)["cn-beijing"]
    assert entry["dataCacheId"] == first["dataCacheId"] and entry["status"] == "Available"
    assert entry["reason"] == "RevisionCopyFailed" and "quota exceeded" in entry["message"]
    assert "failedGeneration" not in entry and entry["building"]["status"] == "Failed"
    assert kube.condition("datacachereplication", name, "Ready")["status"] == "True"  # type: ignore[index]
    assert eci.cache(first["dataCacheId"]) is not None

    # A reconcile request tries the copy again; the rule is gone, so it takes over.
    eci.clear_rules()
    kube.kubectl(
        "annotate", "datacachereplication", name, "--overwrite", "eci.datacache.dev/reconcile-requested-at=1"
    )

    def switched() -> dict[str, Any] | None:
        found = destinations(kube.get("datacachereplication", name) or {"status": {}}).get("cn-beijing", {})
        return found if found.get("revision") == "r2" else None

    entry = wait_for(switched, timeout=120, what="the copy of r2 to take over")
    assert (entry["path"], entry["status"]) == (f"{own_path}.r2", "Available")
    assert kube.condition("datacachereplication", name, "RevisionFailed")["status"] == "False"  # type: ignore[index]
    wait_for(lambda: eci.cache(first["dataCacheId"]) is None, what="the superseded copy deleted")
