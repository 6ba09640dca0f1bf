"""A pass starts from the status the previous pass computed, not from a watched body that
has not caught up with our own write yet."""

from __future__ import annotations

from datetime import UTC, datetime

from datacache_operator.controllers.base import PollingController
from datacache_operator.settings import OperatorSettings

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def test_a_pass_starts_from_what_the_last_pass_computed_until_the_object_is_forgotten():
    controller = PollingController(OperatorSettings(), cloud=None)
    stale_body = {"metadata": {"uid": "u1"}, "status": {"dataCacheId": "edc-old", "cacheGeneration": 1}}
    assert controller.current_status(stale_body) == {"dataCacheId": "edc-old", "cacheGeneration": 1}

    written = {"dataCacheId": "edc-new", "cacheGeneration": 2, "failedGeneration": None}
    controller._conclude("u1", written, [], 3, NOW, 1.0, [])
    status = controller.current_status(stale_body)
    assert (status["dataCacheId"], status["cacheGeneration"], status["observedGeneration"]) == (
        "edc-new",
        2,
        3,
    )
    assert "failedGeneration" not in status  # removed by the patch, as the apiserver keeps it
    status["dataCacheId"] = "changed by a pass"
    assert controller.current_status(stale_body)["dataCacheId"] == "edc-new"  # a copy, not the memory

    other = {"metadata": {"uid": "u2"}, "status": {"dataCacheId": "edc-2"}}
    assert controller.current_status(other) == {"dataCacheId": "edc-2"}
    controller.forget("u1")
    assert controller.current_status(stale_body)["dataCacheId"] == "edc-old"
