"""DataCache end to end: the operator process, the real apiserver, the ECI emulator."""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.support import Kube, OperatorProcess, wait_for

from datacache_operator import API_VERSION

REGION = "cn-hangzhou"


def datacache(name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "path": f"/models/{name}",
        "dataSource": {
            "type": "URL",
            "options": {"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2-0.5B"},
        },
        **spec,
    }
    return {"apiVersion": API_VERSION, "kind": "DataCache", "metadata": {"name": name}, "spec": body}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def caches_owned_by(eci: Any, uid: str, region: str = REGION) -> list[dict[str, Any]]:
    return [
        c
        for c in eci.caches(region=region)
        if any(t.get("Key") == "eci.datacache.dev/owner-uid" and t.get("Value") == uid for t in _tags(c))
    ]


def _tags(cache: dict[str, Any]) -> list[dict[str, str]]:
    tags = cache.get("Tags") or cache.get("tags") or []
    if isinstance(tags, dict):
        return [{"Key": k, "Value": v} for k, v in tags.items()]
    return list(tags)


def _cache_id(cache: dict[str, Any]) -> str:
    return str(cache.get("DataCacheId") or cache.get("data_cache_id") or cache.get("id"))


def test_create_becomes_ready_with_one_tagged_cache(kube: Kube, operator: OperatorProcess, eci: Any):
    name = unique("qwen")
    kube.apply(datacache(name, retentionDays=7, tags={"team": "ml"}))
    obj = kube.wait_condition("datacache", name, "Ready", "True")

    status = obj["status"]
    assert status["status"] == "Available"
    assert status["dataCacheId"].startswith("edc-")
    assert status["region"] == REGION
    assert status["path"] == f"/models/{name}" and status["bucket"] == "default" and status["size"] == 20
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Synced", "Stalled"}

    owned = caches_owned_by(eci, obj["metadata"]["uid"])
    assert [_cache_id(c) for c in owned] == [status["dataCacheId"]]
    columns = kube.kubectl("get", "edc", name).stdout.splitlines()
    assert columns[0].split()[:5] == ["NAME", "READY", "STATUS", "ID", "REGION"]
    assert "Available" in columns[1] and status["dataCacheId"] in columns[1]


def test_spec_change_sends_only_the_changed_fields(kube: Kube, operator: OperatorProcess, eci: Any):
    name = unique("upd")
    kube.apply(datacache(name, retentionDays=7))
    obj = kube.wait_condition("datacache", name, "Ready", "True")
    cache_id = obj["status"]["dataCacheId"]

    kube.apply(datacache(name, retentionDays=30))

    def update_call() -> dict[str, Any] | None:
        calls = [c for c in eci.calls(action="UpdateDataCache") if c["params"].get("DataCacheId") == cache_id]
        return calls[-1] if calls else None

    call = wait_for(update_call, what="UpdateDataCache")
    sent = {k for k in call["params"] if k not in ("RegionId", "DataCacheId", "ClientToken")}
    assert sent == {"RetentionDays"}
    assert call["params"]["RetentionDays"] == "30"
    kube.wait_condition("datacache", name, "Ready", "True")
    assert wait_for(lambda: (kube.get("datacache", name) or {}).get("status", {}).get("retentionDays") == 30)


def test_delete_policy_delete_removes_the_cache(kube: Kube, operator: OperatorProcess, eci: Any):
    name = unique("del")
    kube.apply(datacache(name))
    obj = kube.wait_condition("datacache", name, "Ready", "True")
    assert "eci.datacache.dev/finalizer" in obj["metadata"]["finalizers"]
    kube.kubectl("delete", "datacache", name, "--wait=false")
    wait_for(lambda: kube.get("datacache", name) is None, what="the object to go")
    assert caches_owned_by(eci, obj["metadata"]["uid"]) == []


def test_delete_policy_retain_keeps_the_cache(kube: Kube, operator: OperatorProcess, eci: Any):
    name = unique("keep")
    kube.apply(datacache(name, deletionPolicy="Retain"))
    obj = kube.wait_condition("datacache", name, "Ready", "True")
    kube.kubectl("delete", "datacache", name, "--wait=false")
    wait_for(lambda: kube.get("datacache", name) is None, what="the object to go")
    assert [_cache_id(c) for c in caches_owned_by(eci, obj["metadata"]["uid"])] == [
        obj["status"]["dataCacheId"]
    ]


def test_adopts_an_existing_cache_and_reports_a_missing_one(kube: Kube, operator: OperatorProcess, eci: Any):
    owner = unique("first")
    kube.apply(datacache(owner, deletionPolicy="Retain"))
    existing = kube.wait_condition("datacache", owner, "Ready", "True")["status"]["dataCacheId"]
    creates_before = len(eci.calls(action="CreateDataCache"))

    adopter = unique("adopt")
    kube.apply(datacache(adopter, dataCacheId=existing, path=f"/models/{owner}"))
    adopted = kube.wait_condition("datacache", adopter, "Ready", "True")
    assert adopted["status"]["dataCacheId"] == existing
    assert len(eci.calls(action="CreateDataCache")) == creates_before

    missing = unique("missing")
    kube.apply(datacache(missing, dataCacheId="edc-doesnotexist0000"))
    obj = kube.wait_condition("datacache", missing, "Ready", "False", reason="NotFound")
    stalled = next(c for c in obj["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert len(eci.calls(action="CreateDataCache")) == creates_before


def test_drift_recreates_a_cache_deleted_outside(kube: Kube, operator: OperatorProcess, eci: Any):
    name = unique("drift")
    kube.apply(datacache(name))
    first = kube.wait_condition("datacache", name, "Ready", "True")["status"]["dataCacheId"]
    eci.delete_out_of_band(first)

    def replaced() -> str | None:
        obj = kube.get("datacache", name) or {}
        new_id = obj.get("status", {}).get("dataCacheId")
        ready = next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})
        return new_id if new_id and new_id != first and ready.get("status") == "True" else None

    second = wait_for(replaced, what="a new cache")
    uid = kube.get("datacache", name)["metadata"]["uid"]  # type: ignore[index]
    assert [_cache_id(c) for c in caches_owned_by(eci, uid)] == [second]
