"""Pure helpers over `status.conditions` as plain JSON dicts (what kopf hands us and patches).

No I/O and no clock: callers pass `now`, so reconcile decisions stay unit-testable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from datacache_operator.api.common import (
    CONDITION_MESSAGE_MAX_LENGTH,
    CONDITION_REASON_MAX_LENGTH,
    ConditionStatus,
)

FALLBACK_REASON = "Unknown"
_REASON_INVALID_CHARACTERS = re.compile(r"[^A-Za-z0-9_.,:]")


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serialises (`2026-01-02T03:04:05Z`)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_reason(text: str) -> str:
    """`text` made a valid condition reason (the schema's pattern), unchanged when it already is.

    ECI codes such as `InvalidParameter.Size` pass as they are; anything else loses the
    characters the apiserver would reject, so a status patch never fails on its reason.
    """
    reason = _REASON_INVALID_CHARACTERS.sub("", text)[:CONDITION_REASON_MAX_LENGTH]
    reason = reason.lstrip("0123456789_.,:").rstrip(".,:")
    return reason or FALLBACK_REASON


def get_condition(conditions: Sequence[dict[str, Any]] | None, type: str) -> dict[str, Any] | None:
    """The condition of that type, or None when absent (which means Unknown)."""
    return next((c for c in conditions or () if c.get("type") == type), None)


def condition_status(conditions: Sequence[dict[str, Any]] | None, type: str) -> ConditionStatus:
    """Status of the condition of that type; an absent condition counts as Unknown."""
    condition = get_condition(conditions, type) or {}
    try:
        return ConditionStatus(str(condition.get("status", ConditionStatus.UNKNOWN)))
    except ValueError:
        return ConditionStatus.UNKNOWN


def is_condition_true(conditions: Sequence[dict[str, Any]] | None, type: str) -> bool:
    return condition_status(conditions, type) is ConditionStatus.TRUE


def set_condition(
    conditions: Sequence[dict[str, Any]] | None,
    type: str,
    status: ConditionStatus | str,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """A new list with the condition of `type` set; the input is not modified.

    lastTransitionTime moves to `now` only when the status changes (or the condition is
    new), as the API conventions require; reason, message and observedGeneration always
    take the new values (the reason through `to_reason`, the message cut to the schema's
    limit). Other conditions keep their place, a new one goes last, so an unchanged input
    yields an equal list and callers can skip the patch.
    """
    status = ConditionStatus(status)
    previous = get_condition(conditions, type)
    transition_time = (
        previous["lastTransitionTime"]
        if previous is not None and previous.get("status") == status and previous.get("lastTransitionTime")
        else format_time(now)
    )
    updated: dict[str, Any] = {
        "type": type,
        "status": str(status),
        "reason": to_reason(reason),
        "message": message[:CONDITION_MESSAGE_MAX_LENGTH],
        "lastTransitionTime": transition_time,
    }
    if generation is not None:
        updated["observedGeneration"] = generation
    result = [dict(c) for c in conditions or ()]
    if previous is None:
        result.append(updated)
    else:
        result = [updated if c.get("type") == type else c for c in result]
    return result
