"""What the watch tells the scheduler, and what one pass does with it: a pass acts only on an
object that carries our finalizer (kopf asks for it in the same cycle as it first sees the
object, and a cache made before it is on could outlive an object deleted in between); the
finalizer's arrival, a new generation or a reconcile request is a change; a settled object
found at start-up waits behind changes."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest

from datacache_operator import runtime
from datacache_operator.api.common import PAUSED_ANNOTATION, RECONCILE_REQUEST_ANNOTATION
from datacache_operator.controllers.base import PassResult, PollingController
from datacache_operator.controllers.scheduler import PassPriority
from datacache_operator.metrics import Metrics
from datacache_operator.settings import OperatorSettings


class Body(dict):  # type: ignore[type-arg]
    @property
    def metadata(self) -> dict[str, Any]:
        return self["metadata"]  # type: ignore[no-any-return]


class Controller(PollingController):
    def __init__(self) -> None:
        super().__init__(OperatorSettings(batching=False), cloud=None)
        self.seen: list[dict[str, Any]] = []

    async def reconcile(self, body: Any) -> PassResult:
        self.seen.append(body)
        return PassResult(status={}, delay=7.0)


def memo_with(controller: Controller) -> types.SimpleNamespace:
    memo = types.SimpleNamespace(metrics=Metrics(), binder=None)
    runtime.prepare(memo, OperatorSettings(batching=False), {"datacaches": ("DataCache", controller)})
    return memo


@pytest.fixture(autouse=True)
def passes_run_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """No workers and no pod resync: each test runs the passes it looks at itself."""
    monkeypatch.setattr(runtime, "start_background", lambda memo: None)


def body(generation: int = 1, finalizers: list[str] | None = None, **status: Any) -> Body:
    return Body(
        apiVersion="eci.datacache.dev/v1alpha1",
        kind="DataCache",
        metadata={
            "uid": "u1",
            "namespace": "ml",
            "name": "qwen",
            "generation": generation,
            "finalizers": finalizers or [],
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": '{"spec": "a copy"}',
                PAUSED_ANNOTATION: "false",
            },
        },
        spec={"path": "/models/qwen"},
        status=status,
    )


async def test_no_pass_until_the_finalizer_is_on_and_its_arrival_is_a_change() -> None:
    controller = Controller()
    memo = memo_with(controller)
    settings = OperatorSettings(batching=False)
    assert runtime.observe("datacaches", body(), "ADDED", memo) is False  # first sight
    entry = memo.scheduler.get("u1")
    assert await runtime.run_pass("DataCache", "datacaches", controller, settings, memo, entry) is None
    assert controller.seen == []  # no pass: nothing protects a cache made now

    protected = body(finalizers=[runtime.FINALIZER])
    assert runtime.observe("datacaches", protected, "MODIFIED", memo) is True  # wakes it
    next_pass = await runtime.run_pass("DataCache", "datacaches", controller, settings, memo, entry)
    assert len(controller.seen) == 1
    assert next_pass is not None and next_pass[1] == PassPriority.POLL  # not Ready: a poll
    assert 6.0 <= next_pass[0] <= 8.0

    deleting = body(finalizers=[runtime.FINALIZER])
    deleting.metadata["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    runtime.observe("datacaches", deleting, "MODIFIED", memo)
    assert await runtime.run_pass("DataCache", "datacaches", controller, settings, memo, entry) is None
    assert len(controller.seen) == 1  # the delete handler takes over
    runtime.observe("datacaches", deleting, "DELETED", memo)
    assert memo.scheduler.get("u1") is None


def test_a_new_generation_or_a_reconcile_request_is_a_change_a_status_write_is_not() -> None:
    memo = memo_with(Controller())
    runtime.observe("datacaches", body(finalizers=[runtime.FINALIZER]), None, memo)
    assert (
        runtime.observe(
            "datacaches", body(finalizers=[runtime.FINALIZER], status="Loading"), "MODIFIED", memo
        )
        is False
    )
    assert runtime.observe("datacaches", body(2, finalizers=[runtime.FINALIZER]), "MODIFIED", memo) is True
    requested = body(2, finalizers=[runtime.FINALIZER])
    requested.metadata["annotations"][RECONCILE_REQUEST_ANNOTATION] = "now"
    assert runtime.observe("datacaches", requested, "MODIFIED", memo) is True


def test_a_settled_object_found_at_start_up_waits_behind_changes() -> None:
    memo = memo_with(Controller())
    runtime.observe("datacaches", body(3, finalizers=[runtime.FINALIZER], observedGeneration=3), None, memo)
    assert memo.scheduler.get("u1").priority == PassPriority.RESYNC  # type: ignore[union-attr]
    other = body(2, finalizers=[runtime.FINALIZER], observedGeneration=1)
    other.metadata["uid"] = "u2"
    runtime.observe("datacaches", other, None, memo)  # changed while no replica led
    assert memo.scheduler.get("u2").priority == PassPriority.CHANGE  # type: ignore[union-attr]


def test_the_kept_body_has_no_managed_fields_and_no_copies_of_the_spec() -> None:
    memo = memo_with(Controller())
    runtime.observe("datacaches", body(), "ADDED", memo)
    kept = json.loads(memo.scheduler.get("u1").body)  # type: ignore[union-attr]
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {PAUSED_ANNOTATION: "false"}
    assert kept["spec"] == {"path": "/models/qwen"}


def test_the_remembered_status_goes_once_the_watch_shows_it() -> None:
    controller = Controller()
    memo = memo_with(controller)
    controller._conclude("u1", {"status": "Loading"}, [], 1, controller.clock(), 1.0, [])
    remembered = controller.current_status(body())
    runtime.observe("datacaches", body(), "ADDED", memo)  # the watch has not caught up yet
    assert controller.current_status(body()) == remembered
    runtime.observe("datacaches", body(**remembered), "MODIFIED", memo)
    assert "u1" not in controller._last_status
    assert controller.current_status(body(**remembered)) == remembered
