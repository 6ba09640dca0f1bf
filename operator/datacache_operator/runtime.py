"""The reconcile runtime under kopf: every watch event kept by one scheduler (a change makes
the object due at once), level-based passes run by its workers (read ECI, decide, act, write
status, say when the next pass is due), the finalizer's backoff, and the pod binder's slow
sweep; the statuses are written behind the passes (`controllers/statuswriter.py`). `main.py`
wires these to kopf's decorators; the decisions and the cloud calls are in `controllers/`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import kopf

from datacache_operator import GROUP, kube
from datacache_operator.api.common import is_paused, object_name, reconcile_request
from datacache_operator.api.conditions import get_condition
from datacache_operator.cloud.client import EciClient
from datacache_operator.cloud.errors import EciError
from datacache_operator.cloud.ratelimit import CURRENT_FLOW
from datacache_operator.controllers.accounts import AccountDirectory
from datacache_operator.controllers.base import (
    backoff_delay,
    error_text,
    longest_backoff,
    own_status,
)
from datacache_operator.controllers.pods import PodBinder
from datacache_operator.controllers.scheduler import Entry, PassPriority, Scheduler
from datacache_operator.controllers.statuswriter import StatusWriter
from datacache_operator.metrics import Metrics
from datacache_operator.reconcile.common import SYNC_TIME_REFRESH_INTERVALS, Event, status_to_write
from datacache_operator.settings import OperatorSettings

logger = logging.getLogger("datacache_operator")

FINALIZER = f"{GROUP}/finalizer"
POLL_DEFER_QUEUE_SECONDS = 0.25
STATUS_WRITES_AT_STOP_SECONDS = 5.0  # at shutdown, for the statuses the passes left to write
EVENTS_AT_STOP_SECONDS = 2.0  # then for the events, after the Lease is handed over


async def _patch_status(plural: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> None:
    await kube.patch_status(plural, namespace, name, status)


EVENTS = kube.EventRecorder()


def post_event(obj: Any, type_: str, reason: str, message: str) -> None:
    EVENTS.post(obj, type_, reason, message)


def post_events(body: Any, events: list[Event]) -> None:
    for event in events:
        post_event(body, event.type, event.reason, event.message)


def aligned_delay(delay: float, now: float, settings: OperatorSettings) -> float:
    """With batching on, end the sleep on a grid shared by every object of the process.

    Left alone, each object's polls keep the phase of the moment it was created (plus
    jitter), so at scale they arrive one by one and the describe batcher, which only
    waits a few milliseconds, sends almost one call per object. Rounding each wake-up
    up to the next multiple of a tenth of the interval (loading or stable, whichever
    the delay is closer to) makes the objects due in that tenth poll together: 20 ids a
    call, at the price of at most a tenth more wait. ``now`` is the event loop's clock.
    """
    if not settings.batching or delay <= 0:
        return delay
    interval = (
        settings.poll_interval_loading
        if delay < settings.poll_interval_stable / 2
        else settings.poll_interval_stable
    )
    slot = interval / 10
    return math.ceil((now + delay) / slot) * slot - now


class Finalizer(Protocol):
    async def finalize(self, body: Any) -> tuple[bool, list[Event], dict[str, Any] | None]: ...


def adding_finalizer(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch that puts our finalizer on, only onto the object as seen: the apiserver
    refuses it once the object has changed (a deletion begun meanwhile among others)."""
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
        {"op": "add", "path": "/metadata/finalizers", "value": [*(meta.get("finalizers") or []), FINALIZER]},
    ]


def removing_finalizer(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch that takes our finalizer off and keeps everyone else's (refused when the
    list changed since it was seen: the next pass sees the new list)."""
    finalizers = list(meta.get("finalizers") or [])
    return [
        {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
        {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in finalizers if f != FINALIZER]},
    ]


def finalize_retry_delay(error: Exception, attempt: int, settings: OperatorSettings) -> float:
    """Seconds before the next deletion pass after a failed one: a retryable ECI error
    (throttling, 5xx, a timeout) backs off like a reconcile pass, from seconds up, so a
    passing fault does not hold a deletion for long; anything else waits the longest backoff."""
    if isinstance(error, EciError) and error.retryable:
        return backoff_delay(error, attempt, settings)
    return longest_backoff(settings)


async def resync_pods(binder: PodBinder, settings: OperatorSettings, scheduler: Scheduler) -> None:
    """The slow sweep behind the event-driven checks: waiting pods (a missed or early change)
    and the consumers of every cache."""
    namespaces: list[str | None] = list(settings.namespaces) or [None]
    first = True
    while True:
        try:
            await binder.check_waiting(namespaces, every_namespace=True)
            if not first:  # every object has been seen once the first interval has passed
                await binder.count_consumers(namespaces, dict(scheduler.consumers()))
        except Exception:  # the apiserver may be away for a moment; the next round tries again
            logger.exception("pod resync failed")
        first = False
        await asyncio.sleep(settings.pod_resync_interval)


async def finalize_pass(
    registered: Registered, shared: Shared, entry: Entry, body: dict[str, Any]
) -> tuple[float, int] | None:
    """The pass of an object being deleted: our finalizer goes once the cloud side is gone
    (or retained); until then another pass follows. A pass that began before the deletion has
    ended: the scheduler runs one at a time."""
    settings = shared.settings
    kind, plural, what = registered.spec.kind, registered.spec.plural, registered.spec.cloud_side
    meta = body["metadata"]
    if FINALIZER not in (meta.get("finalizers") or []):
        return None  # nothing of ours to wait for
    name = object_name(meta.get("namespace"), meta["name"])
    if is_paused(meta):
        if entry.failures == 0:
            logger.info(f"{kind} {name}: paused: {what} not deleted until unpaused")
            post_event(body, "Warning", "Paused", f"Paused: {what} not deleted until unpaused.")
        entry.failures += 1
        return 30.0, PassPriority.POLL  # unpausing is a change: a pass follows at once
    try:
        done, events, status = await registered.controller.finalize(body)
        if status is not None and status != own_status(body.get("status") or {}):
            shared.status_writer.write(meta["uid"], plural, meta.get("namespace"), meta["name"], status)
    except Exception as error:
        delay = finalize_retry_delay(error, entry.failures, settings)
        entry.failures += 1
        if isinstance(error, EciError):
            logger.warning(f"{kind} {name}: deletion failed: {error_text(error)}; retrying in {delay:.1f} s")
            post_event(body, "Warning", error.code, f"Deletion failed: {error_text(error)}; retrying.")
        else:
            logger.exception(f"{kind} {name}: deletion failed; retrying in {delay:.1f} s")
        return delay, PassPriority.POLL
    entry.failures = 0
    post_events(body, events)
    if not done:
        return settings.poll_interval_loading, PassPriority.POLL
    if not await kube.patch_object(plural, meta.get("namespace"), meta["name"], removing_finalizer(meta)):
        return min(1.0, settings.poll_interval_loading), PassPriority.CHANGE  # gone, or a newer list
    shared.metrics.objects.forget(kind, meta["uid"])
    return None


class Reconciler(Finalizer, Protocol):
    async def reconcile(self, body: Any) -> Any: ...
    def caught_up(self, uid: str, status: dict[str, Any]) -> None: ...
    def forget(self, uid: str) -> None: ...
    def not_written(self, uid: str) -> None: ...

    clock: Callable[[], datetime]


@dataclass(frozen=True)
class KindSpec:
    """What the generic layers need to know of one kind: one entry of `main.KINDS`."""

    kind: str
    plural: str
    cloud_side: str  # "the data cache is" / "the copies are": for the deletion's messages
    # The cloud status of each of an object's caches, from its status: what the metrics count.
    cloud_statuses: Callable[[Mapping[str, Any]], tuple[str, ...]]
    # (turned usable, turned failed) between two statuses, in the cluster's region: when the
    # pods waiting for the object must be looked at now.
    usable_change: Callable[[Mapping[str, Any], Mapping[str, Any], str], tuple[bool, bool]]
    # Whether its deletion waits for the cloud side (our finalizer): not for a kind that makes
    # nothing in the cloud.
    finalizer: bool = True


class Registered(NamedTuple):
    """One kind as the runtime drives it: its spec and its controller."""

    spec: KindSpec
    controller: Reconciler


@dataclass
class Shared:
    """What every pass of every object shares, made once at start-up (`prepare`); kopf's memo
    carries it as `memo.shared`."""

    settings: OperatorSettings
    metrics: Metrics
    kinds: Mapping[str, Registered]  # plural -> kind
    scheduler: Scheduler
    status_writer: StatusWriter
    cloud: EciClient | None = None
    binder: PodBinder | None = None
    accounts: AccountDirectory | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)


# Annotations that repeat the spec (kubectl's, kopf's): the scheduler keeps bodies without them.
_BULKY_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    f"{GROUP}/last-handled-configuration",
)


def compact(body: Mapping[str, Any]) -> bytes:
    """The object as a pass needs it, as compact JSON: no managedFields, no copies of the spec."""
    meta = dict(body["metadata"])
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and any(key in annotations for key in _BULKY_ANNOTATIONS):
        meta["annotations"] = {k: v for k, v in annotations.items() if k not in _BULKY_ANNOTATIONS}
    return json.dumps({**body, "metadata": meta}, separators=(",", ":")).encode()


def trigger(body: Mapping[str, Any]) -> tuple[Any, bool, str | None, bool]:
    """What makes a pass due at once: a new generation, a changed pause flag, a new reconcile
    request, or the start of the deletion."""
    meta = body["metadata"]
    return (
        meta.get("generation"),
        is_paused(meta),
        reconcile_request(meta),
        bool(meta.get("deletionTimestamp")),
    )


def observe(plural: str, body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> bool:
    """The `when` filter of each kind's event handler, called for every watch event: keep the
    object as now seen; True (the handler then makes it due) only on a real change."""
    shared: Shared = memo.shared
    scheduler = shared.scheduler
    start_background(shared)
    meta = body.metadata
    uid = meta["uid"]
    registered = shared.kinds[plural]
    if type == "DELETED":
        scheduler.forget(uid)
        shared.status_writer.forget(uid)
        registered.controller.forget(uid)
        shared.metrics.objects.forget(registered.spec.kind, uid)
        return False
    status = body.get("status") or {}
    entry, new = scheduler.upsert(
        uid, plural, meta.get("namespace"), meta["name"], compact(body), status.get("consumers")
    )
    registered.controller.caught_up(uid, own_status(status))
    now = trigger(body)
    if new:  # first sight: a new object, or any object after a start or a takeover
        entry.trigger = now
        settled = status.get("observedGeneration") == meta.get("generation") and not meta.get(
            "deletionTimestamp"
        )
        scheduler.schedule(uid, 0.0, PassPriority.RESYNC if settled else PassPriority.CHANGE)
        return False
    if entry.trigger == now:
        return False
    entry.trigger = now
    return True


def wake(body: kopf.Body, memo: kopf.Memo) -> None:
    """Reconcile now, ahead of polls and resyncs."""
    shared: Shared = memo.shared
    shared.scheduler.schedule(body.metadata["uid"], 0.0, PassPriority.CHANGE)


def prepare(
    settings: OperatorSettings,
    metrics: Metrics,
    kinds: Mapping[str, Registered],
    cloud: EciClient | None = None,
    binder: PodBinder | None = None,
    accounts: AccountDirectory | None = None,
) -> Shared:
    """At start-up: one scheduler for every object; `kinds` maps each plural to its kind.
    Its workers start with the first event (`start_background`)."""

    async def run(uid: str, entry: Entry) -> tuple[float, int] | None:
        return await run_pass(kinds[entry.plural], shared, entry)

    shared = Shared(
        settings=settings,
        metrics=metrics,
        kinds=kinds,
        scheduler=Scheduler(run, settings.max_concurrent_passes),
        status_writer=StatusWriter(_patch_status),
        cloud=cloud,
        binder=binder,
        accounts=accounts,
    )
    metrics.status_writes_pending.set_function(shared.status_writer.pending)
    return shared


CLUSTER_ID_NAMESPACE = "kube-system"


async def with_cluster_id(settings: OperatorSettings) -> OperatorSettings:
    """The settings with a cluster id: the one configured, else the uid of kube-system (there
    in every cluster, the same for its whole life)."""
    if settings.cluster_id:
        return settings
    namespace = await kube.read_namespace(CLUSTER_ID_NAMESPACE)
    if namespace is None:
        raise RuntimeError(
            f"no {CLUSTER_ID_NAMESPACE} namespace to take the cluster id from: set DATACACHE_CLUSTER_ID"
        )
    uid: str = namespace["metadata"]["uid"]
    logger.info("cluster id %s (the uid of %s)", uid, CLUSTER_ID_NAMESPACE)
    return settings.model_copy(update={"cluster_id": uid})


def start_background(shared: Shared) -> None:
    """Start the scheduler's workers and the pod resync once, with the first object's event:
    a replica that never sees one (not the leader) runs no pass."""
    scheduler = shared.scheduler
    if scheduler.started:
        return
    scheduler.start()
    if shared.binder is not None:
        resync = resync_pods(shared.binder, shared.settings, scheduler)
        shared.background.append(asyncio.get_running_loop().create_task(resync, name="pod-resync"))


async def stop(shared: Shared) -> None:
    """At shutdown: the passes, then the statuses they left to write, then the ECI clients.
    The events they left go later (`flush_events`): not on the way to handing the Lease over."""
    for task in shared.background:
        task.cancel()
    await shared.scheduler.stop()
    await shared.status_writer.close(STATUS_WRITES_AT_STOP_SECONDS)
    if shared.accounts is not None:
        shared.accounts.stop()
        await shared.accounts.clients.aclose()
    if shared.cloud is not None:
        await shared.cloud.aclose()


async def flush_events() -> None:
    """At shutdown, once the Lease is handed over: post the events still queued (bounded)."""
    await EVENTS.close(EVENTS_AT_STOP_SECONDS)


def poll_deferral(shared: Shared, entry: Entry) -> float | None:
    """Seconds to put off a poll or resync (not a change) while the calls already waiting for
    the rate limiter take longer than `POLL_DEFER_QUEUE_SECONDS` to go; None: run it now.

    A pass waiting for the limiter holds a worker, and polls that want more calls than the
    limit allows would hold them all. Put off in the scheduler instead, as controller-runtime's
    work queue delays a rate-limited item before a worker takes it, a poll costs nothing while
    it waits; the limiter still has a quarter of a second of calls queued, so no slot goes
    unused."""
    if entry.priority == PassPriority.CHANGE:
        return None
    if shared.accounts is not None:  # the limiter of the object's account
        queued = shared.accounts.queued_seconds(entry.namespace or "")
    else:
        queued = shared.cloud.queued_seconds() if shared.cloud is not None else 0.0
    if queued <= POLL_DEFER_QUEUE_SECONDS:
        return None
    return queued * random.uniform(1.0, 1.5)  # noqa: S311 - spread out: not all back at once


async def run_pass(registered: Registered, shared: Shared, entry: Entry) -> tuple[float, int] | None:
    """One level-based pass of one object: read ECI, decide, act, write status and events.
    Returns when the next pass is due and at which priority (None: when it changes)."""
    settings = shared.settings
    deferral = poll_deferral(shared, entry)
    if deferral is not None:
        return deferral, entry.priority
    spec, controller = registered.spec, registered.controller
    kind, plural = spec.kind, spec.plural
    body = json.loads(entry.body)
    meta = body["metadata"]
    name = object_name(meta.get("namespace"), meta["name"])
    # The object's namespace is whom its ECI calls are for: the rate limiter serves namespaces in turn.
    CURRENT_FLOW.set(meta.get("namespace") or "")
    if meta.get("deletionTimestamp"):
        return await finalize_pass(registered, shared, entry, body)
    if spec.finalizer and FINALIZER not in (meta.get("finalizers") or []):
        # Before anything is made in the cloud: without the finalizer a deletion would not
        # wait for us, and a cache made now could outlive its object. The patch holds only for
        # the object as seen, so it cannot land on one being deleted.
        if not await kube.patch_object(plural, meta.get("namespace"), meta["name"], adding_finalizer(meta)):
            return min(1.0, settings.poll_interval_loading), PassPriority.CHANGE  # changed or gone
        meta["finalizers"] = [*(meta.get("finalizers") or []), FINALIZER]
    metrics = shared.metrics
    binder = shared.binder
    try:
        with metrics.reconcile(kind) as outcome:
            before = own_status(body.get("status") or {})
            result = await controller.reconcile(body)
            max_age = SYNC_TIME_REFRESH_INTERVALS * settings.poll_interval_stable
            written = status_to_write(before, result.status, controller.clock(), max_age)
            usable, failed = spec.usable_change(before, result.status, settings.effective_cluster_region)
            # Waiting pods learn of it once the status says so (the binder reads the object).
            tell_pods = (
                functools.partial(binder.cache_changed, meta.get("namespace"))
                if binder is not None and (usable or failed)
                else None
            )
            if written is None:
                controller.not_written(meta["uid"])
                if tell_pods is not None:
                    tell_pods()
            else:
                shared.status_writer.write(
                    meta["uid"], plural, meta.get("namespace"), meta["name"], written, tell_pods
                )
            post_events(body, result.events)
            ready = get_condition(result.status.get("conditions"), "Ready") or {}
            outcome["result"] = "ready" if ready.get("status") == "True" else "not_ready"
            metrics.objects.record(
                kind,
                meta["uid"],
                result.status,
                spec.cloud_statuses(result.status),
                name,
            )
        delay = result.delay
        priority = PassPriority.RESYNC if outcome["result"] == "ready" else PassPriority.POLL
    except Exception:  # an unexpected bug or API failure must not end the object's passes
        logger.exception(f"{kind} {name}: reconcile failed; retrying")
        delay, priority = 10.0, PassPriority.POLL
    return aligned_delay(delay, asyncio.get_running_loop().time(), settings), priority
