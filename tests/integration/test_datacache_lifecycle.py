"""DataCache end to end: the operator process, the real apiserver, the ECI emulator."""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.support import Kube, OperatorProcess, wait_for

from datacache_operator import API_VERSION
from datacache_operator.api.common import fit_name

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
    assert status["path"] == f"/models/{name}" and status["size"] == 20
    assert status["bucket"] == kube.namespace  # the namespace's own bucket
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    # SourcePinned: a Hugging Face source, built from the commit its branch is at.
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Synced", "Stalled", "SourcePinned"}

    owned = caches_owned_by(eci, obj["metadata"]["uid"])
    assert [_cache_id(c) for c in owned] == [status["dataCacheId"]]
    columns = kube.kubectl("get", "edc", name).stdout.splitlines()
    assert columns[0].split()[:5] == ["NAME", "READY", "STATUS", "ID", "REGION"]
    assert "Available" in columns[1] and status["dataCacheId"] in columns[1]


def test_a_name_longer_than_eci_takes_is_fitted_for_the_cache(
    kube: Kube, operator: OperatorProcess, eci: Any
):
    name = unique("long").ljust(253, "x")  # as long as Kubernetes allows; ECI takes 128
    kube.apply(datacache(name))
    obj = kube.wait_condition("datacache", name, "Ready", "True")
    (cache,) = caches_owned_by(eci, obj["metadata"]["uid"])
    owner_name = next(t["Value"] for t in _tags(cache) if t["Key"] == "eci.datacache.dev/owner-name")
    assert cache["Name"] == owner_name == fit_name(name, 128)
    assert len(cache["Name"]) == 128 and cache["Name"].startswith(name[:100])


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


def test_terminal_error_stalls_then_a_spec_fix_recovers(kube: Kube, operator: OperatorProcess, eci: Any):
    name = unique("small")
    kube.apply(datacache(name, size=5))  # ECI takes 20 GiB and more
    obj = kube.wait_condition("datacache", name, "Stalled", "True", reason="InvalidParameter")
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and "InvalidParameter" in ready["message"]
    assert obj["status"].get("dataCacheId") is None
    attempts = len(eci.calls(action="CreateDataCache"))
    kube.wait_condition("datacache", name, "Synced", "False", reason="InvalidParameter")
    # No hot loop: the same spec is not sent again (checked after the operator's next passes).
    generation = obj["metadata"]["generation"]
    kube.apply(datacache(name, size=30))
    fixed = kube.wait_condition("datacache", name, "Ready", "True")
    assert fixed["status"]["observedGeneration"] == generation + 1
    assert fixed["status"]["size"] == 30
    stalled = next(c for c in fixed["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "False"
    assert len(eci.calls(action="CreateDataCache")) == attempts + 1


def test_a_reconcile_request_rebuilds_a_failed_cache_without_a_spec_change(
    kube: Kube, operator: OperatorProcess, eci: Any
):
    name = unique("flaky")
    eci.add_rule("fail", "source repository unreachable", path=f"/models/{name}", operations=["create"])
    kube.apply(datacache(name))
    obj = kube.wait_condition("datacache", name, "Stalled", "True", reason="Failed")
    failed_id = obj["status"]["dataCacheId"]
    assert obj["status"]["status"] == "Failed"

    eci.clear_rules()  # e.g. the repository is reachable again
    kube.kubectl("annotate", "datacache", name, "eci.datacache.dev/reconcile-requested-at=1")
    obj = kube.wait_condition("datacache", name, "Ready", "True", timeout=90)
    assert obj["status"]["lastHandledReconcileAt"] == "1"
    assert obj["metadata"]["generation"] == 1
    assert obj["status"]["dataCacheId"] != failed_id
    wait_for(lambda: eci.cache(failed_id) is None, what="the failed cache deleted")
    assert [_cache_id(c) for c in caches_owned_by(eci, obj["metadata"]["uid"])] == [
        obj["status"]["dataCacheId"]
    ]


def test_retryable_faults_are_ridden_out(kube: Kube, operator: OperatorProcess, eci: Any):
    # First every call fails, so the retry path surely runs; then some calls fail at random.
    seen_before = len(eci.calls())
    eci.set_faults(fault_500_rate=1.0)
    name = unique("faulty")
    kube.apply(datacache(name))
    wait_for(
        lambda: len([c for c in eci.calls()[seen_before:] if c["outcome"] == "InternalError"]) >= 2,
        what="two refused calls",
    )
    kube.wait_condition("datacache", name, "Synced", "False", reason="InternalError")
    assert (kube.condition("datacache", name, "Stalled") or {}).get("status") != "True"
    eci.set_faults(fault_500_rate=0.15, fault_503_rate=0.05, fault_throttle_rate=0.1)
    obj = kube.wait_condition("datacache", name, "Ready", "True", timeout=120)
    assert len(caches_owned_by(eci, obj["metadata"]["uid"])) == 1


def test_a_lost_create_response_is_recovered_by_tag(
    kube: Kube, operator_env: dict[str, str], datacache_crds: list[str], eci: Any, tmp_path: Any
):
    """The cloud created the cache but the operator never wrote its id (crash, lost reply)."""
    from tests.integration.support import create_cache_as_lost_reply

    name = unique("lost")
    kube.apply(datacache(name))
    uid = kube.get("datacache", name)["metadata"]["uid"]  # type: ignore[index]
    cluster = kube.kubectl("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}").stdout
    lost_id = create_cache_as_lost_reply(operator_env, cluster, uid, kube.namespace, name, f"/models/{name}")

    running = OperatorProcess(operator_env, tmp_path / "operator.log")
    running.start()
    try:
        obj = kube.wait_condition("datacache", name, "Ready", "True")
    finally:
        running.stop()
    assert obj["status"]["dataCacheId"] == lost_id
    assert [_cache_id(c) for c in caches_owned_by(eci, uid)] == [lost_id]


def test_operator_killed_right_after_create_makes_one_cache(
    kube: Kube, operator_env: dict[str, str], datacache_crds: list[str], eci: Any, tmp_path: Any
):
    running = OperatorProcess(operator_env, tmp_path / "operator.log")
    running.start()
    names = [unique("crash") for _ in range(5)]
    before = len(eci.calls(action="CreateDataCache"))
    for name in names:
        kube.apply(datacache(name))
    wait_for(lambda: len(eci.calls(action="CreateDataCache")) > before, interval=0.01, what="a create call")
    running.kill()
    running.start()
    try:
        for name in names:
            obj = kube.wait_condition("datacache", name, "Ready", "True")
            assert len(caches_owned_by(eci, obj["metadata"]["uid"])) == 1, name
    finally:
        running.stop()


def test_secret_values_stay_out_of_status_events_and_logs(kube: Kube, operator: OperatorProcess, eci: Any):
    secret_value = f"akSecret-{uuid.uuid4().hex}"
    name = unique("oss")
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-keys"},
            "stringData": {"akId": "LTAI-oss-reader", "akSecret": secret_value},
        }
    )
    kube.apply(
        datacache(
            name,
            dataSource={
                "type": "OSS",
                "options": {
                    "bucket": "models",
                    "url": "oss-cn-hangzhou-internal.aliyuncs.com",
                    "path": "/qwen",
                },
                "secretRef": {"name": f"{name}-keys"},
            },
        )
    )
    obj = kube.wait_condition("datacache", name, "Ready", "True")
    create = next(
        c for c in eci.calls(action="CreateDataCache") if c["params"].get("Path") == f"/models/{name}"
    )
    assert "DataSource.Options.akSecret" in create["params"]  # sent to ECI...
    events = kube.kubectl("get", "events", "-o", "json").stdout
    for place, text in {
        "status": str(obj),
        "events": events,
        "operator log": operator.log(),
        "emulator call log": str(eci.calls()),
    }.items():
        assert secret_value not in text, f"the secret leaked into the {place}"


def test_missing_secret_is_reported_and_then_picked_up(kube: Kube, operator: OperatorProcess):
    name = unique("nosecret")
    source = {"type": "OSS", "options": {"bucket": "models"}, "secretRef": {"name": f"{name}-keys"}}
    kube.apply(datacache(name, dataSource=source))
    obj = kube.wait_condition("datacache", name, "Ready", "False", reason="SecretNotFound")
    assert f"{name}-keys" in next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")["message"]
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-keys"},
            "stringData": {"akId": "x"},
        }
    )
    kube.wait_condition("datacache", name, "Ready", "True")


def test_paused_objects_make_no_cloud_calls(kube: Kube, operator: OperatorProcess, eci: Any):
    name = unique("pause")
    kube.apply(datacache(name, retentionDays=7))
    cache_id = kube.wait_condition("datacache", name, "Ready", "True")["status"]["dataCacheId"]
    kube.kubectl("annotate", "datacache", name, "eci.datacache.dev/paused=true")
    kube.wait_condition("datacache", name, "Synced", "False", reason="ReconcilePaused")
    kube.apply(datacache(name, retentionDays=9))
    generation = kube.get("datacache", name)["metadata"]["generation"]  # type: ignore[index]
    wait_for(
        lambda: (kube.get("datacache", name) or {}).get("status", {}).get("observedGeneration") == generation,
        what="a paused pass over the new generation",
    )
    calls_for = lambda: [c for c in eci.calls() if c["params"].get("DataCacheId") == cache_id]  # noqa: E731
    described = len(calls_for())
    kube.wait_condition("datacache", name, "Synced", "False", reason="ReconcilePaused")
    assert not [c for c in calls_for() if c["action"] == "UpdateDataCache"]
    kube.kubectl("annotate", "datacache", name, "eci.datacache.dev/paused-")
    wait_for(
        lambda: [c for c in calls_for() if c["action"] == "UpdateDataCache"],
        what="the update after unpausing",
    )
    assert len(calls_for()) > described
    kube.wait_condition("datacache", name, "Ready", "True")


def test_an_expired_cache_is_reported_not_recreated(kube: Kube, operator: OperatorProcess, eci: Any):
    name = unique("expire")
    kube.apply(datacache(name, retentionDays=1))
    obj = kube.wait_condition("datacache", name, "Ready", "True")
    assert obj["status"]["expireTime"]
    creates = len(eci.calls(action="CreateDataCache"))
    eci.advance(2 * 86400)  # the cloud's clock: past the retention, ECI removes the cache
    expired = kube.wait_condition("datacache", name, "Ready", "False", reason="Expired")
    assert expired["status"]["status"] == "Expired"
    stalled = next(c for c in expired["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert len(eci.calls(action="CreateDataCache")) == creates
    events = kube.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}").stdout
    assert "Expired" in events and "Available" in events and "Creating" in events


def test_metrics_endpoint_reports_calls_passes_and_caches(kube: Kube, operator: OperatorProcess):
    import urllib.request

    name = unique("metrics")
    kube.apply(datacache(name))
    kube.wait_condition("datacache", name, "Ready", "True")
    port = operator.env["DATACACHE_METRICS_PORT"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def scrape() -> str:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def scraped_with_available() -> str | None:
        text = scrape()
        return text if 'datacache_operator_caches{kind="DataCache",status="Available"}' in text else None

    text = wait_for(scraped_with_available, what="the Available cache in the metrics")
    assert (
        'datacache_operator_eci_calls_total{action="CreateDataCache",outcome="OK",region="cn-hangzhou"}'
        in text
    )
    assert 'datacache_operator_reconciles_total{kind="DataCache",result="ready"}' in text
    assert "datacache_operator_eci_call_duration_seconds_bucket" in text
