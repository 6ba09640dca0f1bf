"""Pure DataCache decisions: plain values in, a step and conditions out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from datacache_operator.cloud.models import ObservedCache
from datacache_operator.reconcile.common import client_token, error_conditions, reason_from_code
from datacache_operator.reconcile.datacache import (
    DesiredCache,
    Situation,
    Step,
    conditions_for,
    next_step,
)
from datacache_operator.reconcile.sync import delta

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TAGS = {"eci.datacache.dev/owner-uid": "u1", "team": "ml"}


def desired(**overrides: object) -> DesiredCache:
    values: dict[str, object] = dict(
        region="cn-hangzhou",
        bucket="default",
        path="/models/qwen",
        name="qwen",
        size=20,
        retention_days=7,
        data_source_type="URL",
        options={"repoId": "Qwen/Qwen2-0.5B", "accessToken": "hf_secret"},
        tags=TAGS,
        resource_group_id=None,
    )
    values.update(overrides)
    return DesiredCache(**values)  # type: ignore[arg-type]


def observed(status: str = "Available", **overrides: object) -> ObservedCache:
    values: dict[str, object] = dict(
        data_cache_id="edc-1",
        region="cn-hangzhou",
        name="qwen",
        size=20,
        status=status,
        retention_days=7,
        data_source_type="URL",
        data_source_options={"repoId": "Qwen/Qwen2-0.5B"},
        tags=TAGS,
    )
    values.update(overrides)
    return ObservedCache(**values)  # type: ignore[arg-type]


def situation(**overrides: object) -> Situation:
    values: dict[str, object] = dict(
        generation=1,
        adopt_id=None,
        known_id="edc-1",
        recovered=False,
        observed=observed(),
        looked_up=True,
        expire_time=None,
        failed_generation=None,
        now=NOW,
    )
    values.update(overrides)
    return Situation(**values)  # type: ignore[arg-type]


def test_no_id_looks_up_the_owner_tag_before_creating():
    assert next_step(situation(known_id=None, observed=None, looked_up=False), desired(), 7) == Step.RECOVER
    recovered = situation(known_id=None, observed=None, looked_up=False, recovered=True)
    assert next_step(recovered, desired(), 7) == Step.CREATE


def test_an_adopted_id_is_never_created():
    missing = situation(adopt_id="edc-9", known_id=None, observed=None)
    assert next_step(missing, desired(), 7) == Step.ADOPTED_MISSING


def test_a_vanished_cache_is_recreated_unless_it_expired():
    gone = situation(observed=None)
    assert next_step(gone, desired(), 7) == Step.RECREATE
    expired = situation(observed=None, expire_time=NOW - timedelta(minutes=1))
    assert next_step(expired, desired(), 7) == Step.EXPIRED


@pytest.mark.parametrize("status", ["Creating", "Loading", "Updating", "Deleting"])
def test_busy_caches_are_waited_for(status: str):
    assert next_step(situation(observed=observed(status)), desired(), 7) == Step.WAIT


def test_available_and_matching_is_ready_and_secrets_are_not_compared():
    assert next_step(situation(), desired(), 7) == Step.READY


def test_a_spec_change_becomes_one_update_with_only_the_changed_fields():
    change = delta(desired(retention_days=30, name="renamed").fields(), observed(), 7)
    assert change.retention_days == 30 and change.name == "renamed"
    assert change.size is None and change.tags is None and change.data_source is None
    assert change.describe() == "name, retentionDays"
    assert next_step(situation(), desired(retention_days=30), 7) == Step.UPDATE


def test_a_data_source_change_is_a_rebuild():
    change = delta(desired(options={"repoId": "Qwen/Qwen2-7B"}).fields(), observed(), 7)
    assert change.data_source and change.describe() == "dataSource" and change.rebuilds


def test_a_failed_cache_stalls_until_the_spec_changes():
    failed = situation(observed=observed("Failed"), failed_generation=1)
    assert next_step(failed, desired(), 7) == Step.FAILED
    assert next_step(
        situation(observed=observed("Failed"), failed_generation=1, generation=2), desired(), 7
    ) == (Step.REPLACE_FAILED)


def test_update_failed_caches_take_an_update():
    assert next_step(situation(observed=observed("UpdateFailed")), desired(size=40), 7) == Step.UPDATE
    assert next_step(situation(observed=observed("UpdateFailed")), desired(), 7) == Step.FAILED


def test_conditions_follow_kstatus():
    ready = {c.type: c for c in conditions_for(Step.READY, observed())}
    assert (ready["Ready"].status, ready["Stalled"].status) == ("True", "False")
    loading = {c.type: c for c in conditions_for(Step.WAIT, observed("Loading", progress="40%"))}
    assert loading["Ready"].reason == "Loading" and "40%" in loading["Ready"].message
    failed = {c.type: c for c in conditions_for(Step.FAILED, observed("Failed"))}
    assert failed["Stalled"].status == "True"


def test_error_conditions_split_terminal_from_retryable():
    terminal = {c.type: c for c in error_conditions("QuotaExceeded", "quota exceeded", terminal=True)}
    assert terminal["Stalled"].status == "True" and terminal["Ready"].reason == "QuotaExceeded"
    retryable = error_conditions("Throttling.User", "slow down", terminal=False)
    assert [c.type for c in retryable] == ["Synced"]


def test_reasons_are_camel_case_and_tokens_are_stable():
    assert reason_from_code("Throttling.User") == "ThrottlingUser"
    assert reason_from_code("InvalidParameter") == "InvalidParameter"
    assert client_token("uid", 0) == client_token("uid", 0) != client_token("uid", 1)
    assert len(client_token("uid", 0)) <= 64 and client_token("uid", 0).isascii()
