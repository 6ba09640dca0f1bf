"""What the watch tells the scheduler, and what one pass does with it: a pass puts our finalizer
on before it does anything else, and only onto the object as seen (a cache made before it is
on could outlive an object deleted in between); a new generation, a reconcile request or the
start of a deletion is a change; a deletion pass takes the finalizer off once the cloud side is
gone, backing off after failures; a settled object found at start-up waits behind changes."""

from __future__ import annotations

import json
import types
from datetime import timedelta
from typing import Any

import pytest

from datacache_operator import kube, runtime
from datacache_operator.api.common import PAUSED_ANNOTATION, RECONCILE_REQUEST_ANNOTATION
from datacache_operator.api.conditions import format_time
from datacache_operator.cloud.errors import EciError
from datacache_operator.controllers.base import PassResult, PollingController
from datacache_operator.controllers.scheduler import PassPriority
from datacache_operator.main import KINDS
from datacache_operator.metrics import Metrics
from datacache_operator.reconcile.common import Event
from datacache_operator.settings import OperatorSettings


class Body(dict):  # type: ignore[type-arg]
    @property
    def metadata(self) -> dict[str, Any]:
        return self["metadata"]  # type: ignore[no-any-return]


SETTINGS = OperatorSettings(batching=False, poll_interval_loading=0.5, poll_interval_stable=3)


class Controller(PollingController):
    def __init__(self) -> None:
        super().__init__(SETTINGS, cloud=None)
        self.seen: list[dict[str, Any]] = []
        self.finalized: list[dict[str, Any]] = []
        self.finalize_outcomes: list[Any] = []  # what each finalize call returns or raises
        self.status: dict[str, Any] = {}  # what each pass concludes

    async def reconcile(self, body: Any) -> PassResult:
        self.seen.append(body)
        self._last_status[body["metadata"]["uid"]] = dict(self.status)  # as _conclude keeps it
        return PassResult(status=dict(self.status), delay=7.0)

    async def _finalize(self, body: Any) -> tuple[bool, list[Event], dict[str, Any] | None]:
        self.finalized.append(body)
        outcome = self.finalize_outcomes.pop(0) if self.finalize_outcomes else True
        if isinstance(outcome, Exception):
            raise outcome
        return outcome, [Event("Normal", "Deleted", "gone")] if outcome else [], None


def memo_with(controller: Controller) -> types.SimpleNamespace:
    """kopf's memo as the operator fills it at start-up: what every pass shares, and the
    scheduler, kinds and status writer at hand for the tests."""
    shared = runtime.prepare(
        SETTINGS, Metrics(), {"datacaches": runtime.Registered(KINDS[0].spec, controller)}
    )
    return types.SimpleNamespace(
        shared=shared, scheduler=shared.scheduler, kinds=shared.kinds, status_writer=shared.status_writer
    )


class Apiserver:
    """What the passes send to the apiserver: JSON patches of the object (the finalizer),
    status patches and events; `refuse` makes the next object patches fail (a failed test)."""

    def __init__(self) -> None:
        self.patches: list[list[dict[str, Any]]] = []
        self.statuses: list[Any] = []
        self.addressed: list[tuple[str, str | None, str]] = []  # (plural, namespace, name) of each call
        self.events: list[tuple[str, str, str]] = []
        self.refuse = 0

    async def patch_object(self, plural: str, namespace: str | None, name: str, operations: Any) -> bool:
        self.addressed.append((plural, namespace, name))
        if self.refuse:
            self.refuse -= 1
            return False
        self.patches.append(operations)
        return True

    async def patch_status(self, plural: str, namespace: str | None, name: str, status: Any) -> None:
        self.addressed.append((plural, namespace, name))
        self.statuses.append(status)

    def post_event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


@pytest.fixture(autouse=True)
def apiserver(monkeypatch: pytest.MonkeyPatch) -> Apiserver:
    """No workers and no pod resync: each test runs the passes it looks at itself."""
    monkeypatch.setattr(runtime, "start_background", lambda shared: None)
    fake = Apiserver()
    monkeypatch.setattr(kube, "patch_object", fake.patch_object)
    monkeypatch.setattr(kube, "patch_status", fake.patch_status)
    monkeypatch.setattr(runtime, "post_event", fake.post_event)
    return fake


async def run(controller: Controller, memo: Any) -> tuple[float, int] | None:
    """One pass, and the status it left to write written."""
    entry = memo.scheduler.get("u1")
    next_pass = await runtime.run_pass(memo.kinds["datacaches"], memo.shared, entry)
    await memo.status_writer.drain()
    return next_pass


def body(generation: int = 1, finalizers: list[str] | None = None, **status: Any) -> Body:
    return Body(
        apiVersion="eci.datacache.dev/v1alpha1",
        kind="DataCache",
        metadata={
            "uid": "u1",
            "namespace": "ml",
            "name": "qwen",
            "generation": generation,
            "resourceVersion": "41",
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


def deleting(**status: Any) -> Body:
    gone = body(finalizers=["other.example/keep", runtime.FINALIZER], **status)
    gone.metadata["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    return gone


async def test_the_first_pass_puts_the_finalizer_on_the_object_as_seen_then_reconciles(
    apiserver: Apiserver,
) -> None:
    controller = Controller()
    memo = memo_with(controller)
    assert runtime.observe("datacaches", body(finalizers=["other.example/keep"]), "ADDED", memo) is False
    next_pass = await run(controller, memo)
    assert apiserver.patches == [
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
            {"op": "add", "path": "/metadata/finalizers", "value": ["other.example/keep", runtime.FINALIZER]},
        ]
    ]
    assert len(controller.seen) == 1  # in the same pass: no wait for the watch to show it
    assert controller.seen[0]["metadata"]["finalizers"] == ["other.example/keep", runtime.FINALIZER]
    assert next_pass is not None and next_pass[1] == PassPriority.POLL  # not Ready: a poll
    assert 6.0 <= next_pass[0] <= 8.0
    # The watch then shows the finalizer: not a change, no second pass.
    assert runtime.observe("datacaches", body(finalizers=[runtime.FINALIZER]), "MODIFIED", memo) is False


async def test_no_cloud_call_when_the_finalizer_cannot_go_on(apiserver: Apiserver) -> None:
    controller = Controller()
    memo = memo_with(controller)
    runtime.observe("datacaches", body(), "ADDED", memo)
    apiserver.refuse = 1  # the object changed (or went) since the watch showed it
    assert await run(controller, memo) == (0.5, PassPriority.CHANGE)  # soon, with the newer body
    assert controller.seen == []


async def test_a_deletion_is_a_change_and_the_finalizer_goes_once_the_cloud_side_is_gone(
    apiserver: Apiserver,
) -> None:
    controller = Controller()
    memo = memo_with(controller)
    runtime.observe("datacaches", body(finalizers=[runtime.FINALIZER]), "ADDED", memo)
    assert runtime.observe("datacaches", deleting(), "MODIFIED", memo) is True
    controller.finalize_outcomes = [False, True]  # the cache is still being deleted, then gone
    assert await run(controller, memo) == (0.5, PassPriority.POLL)
    assert apiserver.patches == []
    assert await run(controller, memo) is None
    assert apiserver.patches == [
        [
            {
                "op": "test",
                "path": "/metadata/finalizers",
                "value": ["other.example/keep", runtime.FINALIZER],
            },
            {"op": "replace", "path": "/metadata/finalizers", "value": ["other.example/keep"]},
        ]
    ]
    assert ("Normal", "Deleted", "gone") in apiserver.events
    assert controller.seen == []  # no reconcile of an object being deleted
    runtime.observe("datacaches", deleting(), "DELETED", memo)
    assert memo.scheduler.get("u1") is None


async def test_an_object_deleted_before_its_first_pass_is_left_to_go() -> None:
    controller = Controller()
    memo = memo_with(controller)
    gone = body(finalizers=["other.example/keep"])
    gone.metadata["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    runtime.observe("datacaches", gone, "ADDED", memo)
    assert memo.scheduler.get("u1").priority == PassPriority.CHANGE  # type: ignore[union-attr]
    assert await run(controller, memo) is None
    assert controller.finalized == [] and controller.seen == []


async def test_a_retryable_error_while_deleting_backs_off_in_seconds_and_says_why(
    apiserver: Apiserver,
) -> None:
    """Found by the fault soak: left to a minute's wait, a throttled delete held the object long."""
    controller = Controller()
    memo = memo_with(controller)
    runtime.observe("datacaches", deleting(), "ADDED", memo)
    delays = []
    for code, status in (("Throttling.User", 400), ("InternalError", 500), ("ServiceUnavailable", 503)):
        for _ in range(3):
            controller.finalize_outcomes.append(EciError(code, "try later", http_status=status))
            delay, priority = await run(controller, memo)  # type: ignore[misc]
            assert 0 < delay <= 3 and priority == PassPriority.POLL, (code, delay)
            delays.append(delay)
    assert delays[-1] > delays[0]  # backs off
    assert ("Warning", "ServiceUnavailable", "Deletion failed: ServiceUnavailable: try later; retrying.") in (
        apiserver.events
    )
    controller.finalize_outcomes.append(EciError("Throttling.User", "slow", http_status=400, retry_after=7.0))
    assert await run(controller, memo) == (7.0, PassPriority.POLL)  # the server's retry-after wins
    controller.finalize_outcomes.append(EciError("Forbidden.RAM", "no permission", http_status=403))
    assert await run(controller, memo) == (3.0, PassPriority.POLL)  # terminal: the longest backoff
    assert await run(controller, memo) is None  # and once it works, the finalizer goes
    assert len(apiserver.patches) == 1


async def test_a_paused_object_is_not_deleted_until_unpaused_and_says_so_once(apiserver: Apiserver) -> None:
    controller = Controller()
    memo = memo_with(controller)
    paused = deleting()
    paused.metadata["annotations"][PAUSED_ANNOTATION] = "true"
    runtime.observe("datacaches", paused, "ADDED", memo)
    assert await run(controller, memo) == (30.0, PassPriority.POLL)
    assert await run(controller, memo) == (30.0, PassPriority.POLL)
    assert controller.finalized == []
    assert [e for e in apiserver.events if e[1] == "Paused"] == [
        ("Warning", "Paused", "Paused: the data cache is not deleted until unpaused.")
    ]
    assert runtime.observe("datacaches", deleting(), "MODIFIED", memo) is True  # unpaused: a change
    assert await run(controller, memo) is None


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


async def test_a_drift_check_that_finds_nothing_new_writes_no_status(apiserver: Apiserver) -> None:
    """Only lastSyncTime would change: no write (and no watch event) until it is ten stable
    intervals old; the pass's remembered status goes, as nothing will show it."""
    controller = Controller()
    memo = memo_with(controller)
    now = controller.clock()

    def synced(seconds_ago: float) -> str:
        return format_time(now - timedelta(seconds=seconds_ago))

    controller.status = {"status": "Available", "lastSyncTime": synced(0)}
    runtime.observe(
        "datacaches",
        body(finalizers=[runtime.FINALIZER], status="Available", lastSyncTime=synced(10)),
        "ADDED",
        memo,
    )
    await run(controller, memo)
    assert apiserver.statuses == []
    assert "u1" not in controller._last_status

    old = body(finalizers=[runtime.FINALIZER], status="Available", lastSyncTime=synced(10 * 3 + 1))
    runtime.observe("datacaches", old, "MODIFIED", memo)  # SETTINGS: a stable interval of 3 s
    await run(controller, memo)
    assert apiserver.statuses == [controller.status]


class QueuedCloud:
    """The cloud client as the deferral sees it: how long the calls already waiting take."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def queued_seconds(self) -> float:
        return self.seconds


async def test_a_poll_waits_in_the_scheduler_not_in_a_worker_while_the_rate_limit_is_behind(
    apiserver: Apiserver,
) -> None:
    controller = Controller()
    memo = memo_with(controller)
    memo.shared.cloud = QueuedCloud(2.0)
    runtime.observe("datacaches", body(finalizers=[runtime.FINALIZER]), "ADDED", memo)
    memo.scheduler.get("u1").priority = PassPriority.POLL
    next_pass = await run(controller, memo)
    assert next_pass is not None
    delay, priority = next_pass
    assert 2.0 <= delay <= 3.0 and priority == PassPriority.POLL
    assert controller.seen == []  # put off, not run
    memo.shared.cloud.seconds = 0.1  # the limiter caught up
    await run(controller, memo)
    assert len(controller.seen) == 1


async def test_a_change_is_never_put_off(apiserver: Apiserver) -> None:
    controller = Controller()
    memo = memo_with(controller)
    memo.shared.cloud = QueuedCloud(30.0)
    runtime.observe("datacaches", body(), "ADDED", memo)  # new: its first pass is a change
    assert memo.scheduler.get("u1").priority == PassPriority.CHANGE
    await run(controller, memo)
    assert len(controller.seen) == 1
