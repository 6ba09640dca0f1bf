"""Pure decisions of DataCacheReplication: source readiness, per-destination steps, conditions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datacache_operator.api.common import DESTINATION_REGION_TAG
from datacache_operator.api.crds import all_crds
from datacache_operator.cloud.models import ObservedCache
from datacache_operator.reconcile import replication as decide
from datacache_operator.reconcile.ownership import Identity
from datacache_operator.reconcile.replication import DestinationSituation, DestStep, SourceState
from datacache_operator.reconcile.sync import CacheFields, delta


def cache(status: str, cache_id: str = "edc-1") -> ObservedCache:
    return ObservedCache(data_cache_id=cache_id, region="cn-beijing", status=status)


def situation(**overrides: Any) -> DestinationSituation:
    values: dict[str, Any] = dict(
        known_id=None, recovered=False, observed=None, generation=1, failed_generation=None
    )
    values.update(overrides)
    return DestinationSituation(**values)


@pytest.mark.parametrize(
    ("known_id", "exists", "observed", "expected"),
    [
        (None, False, None, SourceState.NOT_FOUND),
        (None, True, None, SourceState.NOT_READY),
        ("edc-1", True, None, SourceState.NOT_FOUND),
        ("edc-1", True, cache("Loading"), SourceState.NOT_READY),
        ("edc-1", True, cache("Creating"), SourceState.NOT_READY),
        ("edc-1", True, cache("Failed"), SourceState.FAILED),
        ("edc-1", True, cache("Available"), SourceState.READY),
    ],
)
def test_source_state(
    known_id: str | None, exists: bool, observed: ObservedCache | None, expected: SourceState
):
    assert decide.source_state(known_id, exists, observed) == expected


def test_an_unknown_copy_is_looked_up_by_tag_before_copying():
    assert decide.next_destination_step(situation()) == DestStep.RECOVER
    assert decide.next_destination_step(situation(recovered=True)) == DestStep.COPY


def test_a_known_copy_follows_its_cloud_status():
    known = {"known_id": "edc-1"}
    assert decide.next_destination_step(situation(**known, observed=cache("Creating"))) == DestStep.WAIT
    assert decide.next_destination_step(situation(**known, observed=cache("Loading"))) == DestStep.WAIT
    assert decide.next_destination_step(situation(**known, observed=cache("Available"))) == DestStep.READY
    assert decide.next_destination_step(situation(**known, observed=cache("Whatever"))) == DestStep.WAIT
    assert decide.next_destination_step(situation(**known, observed=None)) == DestStep.MISSING


def test_a_failed_copy_is_retried_only_after_a_spec_change():
    failed = situation(known_id="edc-1", observed=cache("Failed"), generation=2)
    assert decide.next_destination_step(failed) == DestStep.FAILED
    same_spec = situation(known_id="edc-1", observed=cache("Failed"), generation=2, failed_generation=2)
    assert decide.next_destination_step(same_spec) == DestStep.FAILED
    newer_spec = situation(known_id="edc-1", observed=cache("Failed"), generation=3, failed_generation=2)
    assert decide.next_destination_step(newer_spec) == DestStep.REPLACE_FAILED


def test_a_refused_copy_call_waits_for_a_spec_change():
    assert decide.next_destination_step(situation(generation=2, failed_generation=2)) == DestStep.FAILED
    assert decide.next_destination_step(situation(generation=3, failed_generation=2)) == DestStep.RECOVER


def test_copy_token_is_deterministic_per_object_region_and_generation():
    token = decide.copy_token("uid-1", "cn-beijing", 0)
    assert token == decide.copy_token("uid-1", "cn-beijing", 0)
    assert len(token) <= 64 and token.isascii()
    others = {
        decide.copy_token("uid-2", "cn-beijing", 0),
        decide.copy_token("uid-1", "cn-shanghai", 0),
        decide.copy_token("uid-1", "cn-beijing", 1),
        decide.copy_token("uid-1", "cn-beijing", 0, "edc-source-r2"),
    }
    assert token not in others and len(others) == 4


def test_copy_tags_keep_the_owner_tags_over_the_users():
    owner = Identity(cluster="c1", namespace="ns", name="rep", uid="uid-1")
    tags = decide.copy_tags({"team": "ml", "eci.datacache.dev/owner-uid": "forged"}, owner, "cn-beijing")
    assert tags == {
        "team": "ml",
        "eci.datacache.dev/owner-uid": "uid-1",
        "eci.datacache.dev/owner-cluster": "c1",
        "eci.datacache.dev/owner-namespace": "ns",
        "eci.datacache.dev/owner-name": "rep",
        DESTINATION_REGION_TAG: "cn-beijing",
    }


def test_removed_regions():
    assert decide.removed_regions(["cn-beijing"], ["cn-beijing", "cn-shanghai"]) == ["cn-shanghai"]
    assert decide.removed_regions(["cn-beijing", "cn-shanghai"], ["cn-beijing"]) == []


def conditions(values: list[Any]) -> dict[str, tuple[str, str]]:
    return {v.type: (v.status, v.reason) for v in values}


def test_ready_only_when_every_destination_is_available():
    steps = {"cn-beijing": DestStep.READY, "cn-shanghai": DestStep.WAIT}
    assert conditions(decide.summary_conditions(steps))["Ready"] == ("False", "Copying")
    assert decide.ready_count(steps) == "1/2"
    steps["cn-shanghai"] = DestStep.READY
    result = conditions(decide.summary_conditions(steps))
    assert result["Ready"] == ("True", "Available") and result["Stalled"][0] == "False"
    assert decide.ready_count(steps) == "2/2"


def test_stalled_when_every_remaining_destination_failed():
    steps = {"cn-beijing": DestStep.READY, "cn-shanghai": DestStep.FAILED}
    result = conditions(decide.summary_conditions(steps))
    assert result["Ready"] == ("False", "CopyFailed")
    assert result["Stalled"] == ("True", "CopyFailed")
    steps["cn-shenzhen"] = DestStep.WAIT
    result = conditions(decide.summary_conditions(steps))
    assert result["Ready"] == ("False", "Copying") and result["Stalled"][0] == "False"


@pytest.mark.parametrize("state", [SourceState.NOT_FOUND, SourceState.NOT_READY, SourceState.FAILED])
def test_source_conditions_name_the_state(state: SourceState):
    result = decide.source_conditions(state, "DataCache src")
    assert result[0].type == "Ready" and result[0].status == "False" and result[0].reason == str(state)
    assert "DataCache src" in result[0].message


def test_poll_delay_is_fast_while_anything_moves():
    assert decide.poll_delay(SourceState.NOT_READY, {}, 1, 30) == 1
    assert decide.poll_delay(SourceState.NOT_FOUND, {}, 1, 30) == 30
    assert decide.poll_delay(SourceState.READY, {"a": DestStep.WAIT, "b": DestStep.READY}, 1, 30) == 1
    assert decide.poll_delay(SourceState.READY, {"a": DestStep.FAILED, "b": DestStep.READY}, 1, 30) == 30


def test_replication_crd_shape():
    crd = next(c for c in all_crds() if c["spec"]["names"]["kind"] == "DataCacheReplication")
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["edcr"] and names["categories"] == ["eci"]
    (version,) = crd["spec"]["versions"]
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Ready", "Source", "Destinations", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    destinations = spec["properties"]["destinations"]
    assert destinations["x-kubernetes-list-type"] == "map"
    assert destinations["x-kubernetes-list-map-keys"] == ["region"]
    assert destinations["items"]["required"] == ["region"]
    source_rules = [r["rule"] for r in spec["properties"]["source"]["x-kubernetes-validations"]]
    assert "has(self.dataCacheRef) != has(self.dataCacheId)" in source_rules
    assert any("d.region != self.source.region" in r["rule"] for r in spec["x-kubernetes-validations"])


def test_example_parses():
    import yaml

    from datacache_operator.api.datacache import DataCache
    from datacache_operator.api.replication import DataCacheReplication

    path = Path(__file__).resolve().parents[3] / "examples" / "replication-hongkong-to-mainland.yaml"
    source, replication = yaml.safe_load_all(path.read_text())
    cache = DataCache.from_body(source)
    parsed = DataCacheReplication.from_body(replication)
    assert parsed.spec.source.data_cache_ref is not None
    assert parsed.spec.source.data_cache_ref.name == cache.metadata.name
    assert cache.spec.region == "cn-hongkong"
    assert [d.region for d in parsed.spec.destinations] == ["cn-beijing", "cn-shanghai"]


def observed_copy(**fields: Any) -> ObservedCache:
    values: dict[str, Any] = dict(
        data_cache_id="edc-2", region="cn-beijing", status="Available", name="src", bucket="default"
    )
    values.update(path="/models/src", tags={"a": "1"})
    values.update(fields)
    return ObservedCache(**values)


def copy_changes(
    name: str | None,
    retention: int | None,
    tags: dict[str, str],
    copy: ObservedCache,
    applied_retention: int | None,
) -> CacheFields:
    return delta(decide.copy_fields(name, retention, tags), copy, applied_retention)


def test_copy_changes_compare_only_what_the_spec_sets():
    copy = observed_copy()
    assert not copy_changes(None, None, {"a": "1"}, copy, applied_retention=7)
    assert not copy_changes("src", 7, {"a": "1"}, copy, applied_retention=7)
    changes = copy_changes("other", None, {"a": "2"}, copy, applied_retention=7)
    assert (changes.name, changes.retention_days, changes.tags) == ("other", None, {"a": "2"})
    assert changes.describe() == "name, tags" and not changes.rebuilds


def test_retention_is_compared_with_what_eci_states_or_else_what_was_applied():
    changes = copy_changes(None, 30, {"a": "1"}, observed_copy(), applied_retention=7)
    assert (changes.retention_days, changes.describe()) == (30, "retentionDays")
    assert copy_changes(None, 30, {"a": "1"}, observed_copy(), applied_retention=None)
    stated = observed_copy(retention_days=30)
    assert not copy_changes(None, 30, {"a": "1"}, stated, applied_retention=7)


def test_source_revision_follows_the_id_and_the_data_source_but_not_credentials():
    source = observed_copy(
        data_cache_id="edc-1",
        region="cn-hongkong",
        data_source_type="URL",
        data_source_options={"repoId": "Qwen/Qwen2-0.5B", "accessToken": "hf_secret"},
    )
    revision = decide.source_revision(source)
    assert revision == decide.source_revision(source.model_copy())
    assert "hf_secret" not in revision and len(revision) == 16
    rotated = source.model_copy(
        update={"data_source_options": {"repoId": "Qwen/Qwen2-0.5B", "accessToken": "x"}}
    )
    assert decide.source_revision(rotated) == revision
    recreated = source.model_copy(update={"data_cache_id": "edc-9"})
    reloaded = source.model_copy(update={"data_source_options": {"repoId": "Qwen/Qwen2-1.5B"}})
    assert len({revision, decide.source_revision(recreated), decide.source_revision(reloaded)}) == 3


def test_a_copy_is_stale_when_it_holds_another_source_revision():
    assert not decide.is_stale("edc-1", "r1", "edc-1", "r1")
    assert decide.is_stale("edc-1", "r1", "edc-1", "r2")
    # Recorded before revisions were kept: judged by the source id alone.
    assert not decide.is_stale("edc-1", None, "edc-1", "r2")
    assert decide.is_stale("edc-0", None, "edc-1", "r2")
    assert not decide.is_stale(None, None, "edc-1", "r2")


def test_a_stale_copy_is_refreshed_once_it_is_not_busy():
    stale = {"known_id": "edc-2", "stale": True}
    assert decide.next_destination_step(situation(**stale, observed=cache("Available"))) == DestStep.REFRESH
    assert decide.next_destination_step(situation(**stale, observed=cache("Failed"))) == DestStep.REFRESH
    assert decide.next_destination_step(situation(**stale, observed=cache("Loading"))) == DestStep.WAIT
    moved = situation(**stale, observed=cache("Available"), moved=True)
    assert decide.next_destination_step(moved) == DestStep.MOVE


def test_a_reconcile_request_retries_a_failed_copy_of_the_same_spec():
    failed = {"known_id": "edc-1", "observed": cache("Failed"), "generation": 2, "failed_generation": 2}
    assert decide.next_destination_step(situation(**failed)) == DestStep.FAILED
    assert decide.next_destination_step(situation(**failed, retry_requested=True)) == DestStep.REPLACE_FAILED
    refused = {"generation": 2, "failed_generation": 2}
    assert decide.next_destination_step(situation(**refused)) == DestStep.FAILED
    assert decide.next_destination_step(situation(**refused, retry_requested=True)) == DestStep.RECOVER
    ready = situation(known_id="edc-1", observed=cache("Available"), retry_requested=True)
    assert decide.next_destination_step(ready) == DestStep.READY


def test_copy_moved_when_bucket_or_path_differs_from_the_spec_or_the_source():
    source = observed_copy(data_cache_id="edc-1", region="cn-hongkong")
    assert not decide.copy_moved(None, None, observed_copy(), source)
    assert decide.copy_moved(None, "/elsewhere", observed_copy(), source)
    assert decide.copy_moved("other", None, observed_copy(), source)
    assert not decide.copy_moved(None, "/elsewhere", observed_copy(path="/elsewhere"), source)


def test_a_moved_copy_is_replaced_before_a_changed_one_is_updated():
    base = {"known_id": "edc-2", "observed": cache("Available")}
    assert decide.next_destination_step(situation(**base, moved=True, changed=True)) == DestStep.MOVE
    assert decide.next_destination_step(situation(**base, changed=True)) == DestStep.UPDATE
    busy = {"known_id": "edc-2", "observed": cache("Loading")}
    assert decide.next_destination_step(situation(**busy, moved=True, changed=True)) == DestStep.WAIT


def test_a_stale_copy_beside_which_the_new_one_goes_stays_and_serves():
    """Make-before-break: the copy of the new revision goes to another path, so the old one is
    neither refreshed nor moved; it serves while Available (the controller makes the new one)."""
    stale = {"known_id": "edc-2", "stale": True, "beside": True}
    assert decide.next_destination_step(situation(**stale, observed=cache("Available"))) == DestStep.READY
    assert decide.next_destination_step(situation(**stale, observed=cache("Available"), moved=True)) == (
        DestStep.READY
    )
    assert decide.next_destination_step(situation(**stale, observed=cache("Available"), changed=True)) == (
        DestStep.UPDATE
    )
    assert decide.next_destination_step(situation(**stale, observed=cache("Loading"))) == DestStep.WAIT
    assert decide.next_destination_step(situation(**stale, observed=cache("Failed"))) == DestStep.FAILED
    assert decide.next_destination_step(situation(**stale, observed=None)) == DestStep.MISSING
    assert situation(**stale, observed=cache("Available")).superseded
    assert not situation(known_id="edc-2", stale=True, observed=cache("Available")).superseded
    assert not situation(known_id="edc-2", beside=True, observed=cache("Available")).superseded


def test_copy_path_places_revisions_as_a_datacache_does():
    assert decide.copy_path("/copies/qwen", "/models/qwen.r3", "r1") == "/copies/qwen"
    assert decide.copy_path("/copies/qwen", "/models/qwen.r3", "r3") == "/copies/qwen.r3"
    assert decide.copy_path("/copies/qwen/", None, "r2") == "/copies/qwen.r2"
    assert decide.copy_path("/copies/qwen", None, None) == "/copies/qwen"  # a source given by id
    assert decide.copy_path(None, "/models/qwen.r3", "r3") == "/models/qwen.r3"  # the source's own


def test_builds_beside_only_at_another_known_bucket_or_path():
    old = observed_copy(bucket="ml", path="/models/qwen")
    assert decide.builds_beside(old, "ml", "/models/qwen.r2")
    assert decide.builds_beside(old, "other", "/models/qwen")
    assert not decide.builds_beside(old, "ml", "/models/qwen")
    assert not decide.builds_beside(old, None, "/models/qwen.r2")
    assert not decide.builds_beside(observed_copy(bucket="ml", path=None), "ml", "/x")


def test_copy_bound_ids_name_only_this_replications_copies_in_the_region():
    bound = [
        {
            "name": "qwen",
            "region": "cn-beijing",
            "bucket": "ml",
            "path": "/p",
            "dataCacheId": "edc-1",
            "replication": "rep",
        },
        {"name": "qwen", "region": "cn-beijing", "bucket": "ml", "path": "/p", "dataCacheId": "edc-2"},
        {"name": "qwen", "region": "cn-beijing", "bucket": "ml", "path": "/p", "replication": "rep"},
    ]
    pod = {"metadata": {"annotations": {"eci.datacache.dev/bound": json.dumps(bound)}}}
    assert decide.copy_bound_ids(pod, "qwen", "cn-beijing", "rep") == ["edc-1"]
    assert decide.copy_bound_ids(pod, "qwen", "cn-shanghai", "rep") == []
    assert decide.copy_bound_ids({"metadata": {}}, "qwen", "cn-beijing", "rep") == []
