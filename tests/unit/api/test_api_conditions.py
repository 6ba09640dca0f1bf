"""set_condition and friends: pure functions over status.conditions dicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from datacache_operator.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    condition_status,
    format_time,
    get_condition,
    is_condition_true,
    set_condition,
    to_reason,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_is_appended_with_the_transition_time():
    conditions = set_condition([], "Ready", "False", "Creating", "building the cache", 3, T0)
    assert conditions == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Creating",
            "message": "building the cache",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 3,
        }
    ]
    # The dict validates as the CRD's condition shape.
    assert Condition.model_validate(conditions[0]).status is ConditionStatus.FALSE


def test_same_status_keeps_the_transition_time_but_takes_the_rest():
    first = set_condition(None, "Ready", ConditionStatus.FALSE, "Creating", "building", 1, T0)
    second = set_condition(first, "Ready", ConditionStatus.FALSE, "Loading", "45%", 2, T1)
    assert second[0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert (second[0]["reason"], second[0]["message"], second[0]["observedGeneration"]) == (
        "Loading",
        "45%",
        2,
    )


def test_status_change_moves_the_transition_time():
    first = set_condition([], "Ready", "False", "Loading", "", 1, T0)
    second = set_condition(first, "Ready", "True", "Available", "", 1, T1)
    assert second[0]["lastTransitionTime"] == "2026-01-02T03:09:05Z"


def test_input_is_not_modified_and_order_is_kept():
    synced = set_condition([], "Synced", "True", "Synced", "", 1, T0)
    both = set_condition(synced, "Ready", "Unknown", "Pending", "", 1, T0)
    snapshot = [dict(c) for c in both]
    updated = set_condition(both, "Synced", "False", "Throttling", "retrying", 1, T1)
    assert both == snapshot
    assert [c["type"] for c in updated] == ["Synced", "Ready"]
    assert updated[1] == both[1]


def test_unchanged_condition_gives_an_equal_list():
    conditions = set_condition([], "Stalled", "False", "NoError", "", 4, T0)
    assert set_condition(conditions, "Stalled", "False", "NoError", "", 4, T1) == conditions


def test_generation_is_optional():
    (condition,) = set_condition([], "Ready", "Unknown", "Pending", "", None, T0)
    assert "observedGeneration" not in condition


def test_reason_and_message_are_made_valid():
    (condition,) = set_condition([], "Ready", "False", "InvalidParameter.Size", "x" * 40_000, 1, T0)
    assert condition["reason"] == "InvalidParameter.Size"  # ECI codes stay as they are
    assert len(condition["message"]) == 32768
    Condition.model_validate(condition)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Available", "Available"),
        ("IncorrectStatus", "IncorrectStatus"),
        ("Throttling.User", "Throttling.User"),
        ("bad reason!", "badreason"),
        ("403 Forbidden", "Forbidden"),
        ("", "Unknown"),
        ("???", "Unknown"),
        ("Ends.", "Ends"),
    ],
)
def test_to_reason(text: str, reason: str):
    assert to_reason(text) == reason
    Condition.model_validate(
        {"type": "Ready", "status": "True", "reason": reason, "message": "", "lastTransitionTime": T0}
    )


def test_lookups_treat_absence_as_unknown():
    conditions = set_condition([], ConditionType.READY, "True", "Available", "", 1, T0)
    assert get_condition(conditions, "Ready") is conditions[0]
    assert get_condition(conditions, "Stalled") is None
    assert get_condition(None, "Ready") is None
    assert condition_status(conditions, "Ready") is ConditionStatus.TRUE
    assert condition_status(conditions, "Stalled") is ConditionStatus.UNKNOWN
    assert condition_status([{"type": "Ready", "status": "Maybe"}], "Ready") is ConditionStatus.UNKNOWN
    assert is_condition_true(conditions, ConditionType.READY)
    assert not is_condition_true(conditions, ConditionType.STALLED)


def test_format_time_is_utc_with_seconds():
    assert (
        format_time(datetime(2026, 1, 2, 11, 4, 5, 999_999, tzinfo=timezone(timedelta(hours=8))))
        == "2026-01-02T03:04:05Z"
    )
    assert format_time(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"  # naive means UTC
