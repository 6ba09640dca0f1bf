"""The reconcile runtime under kopf: one level-based loop per object (read ECI, decide, act,
write status, sleep adaptively, wake early on a change), the finalizer's backoff, and the
pod binder's slow sweep. `main.py` wires these to kopf's decorators; the decisions and the
cloud calls are in `controllers/`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Protocol

import kopf

from datacache_operator import GROUP, kube
from datacache_operator.api.common import is_paused, reconcile_request
from datacache_operator.api.conditions import get_condition
from datacache_operator.cloud.errors import EciError
from datacache_operator.controllers.base import Event, backoff_delay, own_status
from datacache_operator.controllers.pods import PodBinder
from datacache_operator.metrics import Metrics
from datacache_operator.reconcile.binding import usable_change
from datacache_operator.settings import OperatorSettings

logger = logging.getLogger("datacache_operator")

FINALIZER = f"{GROUP}/finalizer"
# How often a daemon looks again for the finalizer kopf has not written yet.
FINALIZER_WAIT_S = 0.2


def post_event(obj: Any, type_: str, reason: str, message: str) -> None:
    kopf.event(obj, type=type_, reason=reason, message=message)


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


async def finalize_or_back_off(
    controller: Finalizer, body: Any, retry: int, settings: OperatorSettings
) -> tuple[bool, list[Event], dict[str, Any] | None]:
    """One finalize pass. A retryable ECI error (throttling, 5xx, a timeout) becomes a
    TemporaryError with the same backoff as a reconcile pass: left to kopf, an exception
    from a delete handler is retried only after a minute."""
    try:
        return await controller.finalize(body)
    except EciError as error:
        if not error.retryable:
            raise
        raise kopf.TemporaryError(
            f"{error}; retrying", delay=backoff_delay(error, retry, settings)
        ) from error


async def sleep_until_woken(delay: float, stopped: kopf.DaemonStopped, wake: asyncio.Event) -> None:
    """Sleep `delay` seconds, or less when the object changes or the daemon is stopped."""
    waiters = {asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    wake.clear()


async def resync_pods(binder: PodBinder, settings: OperatorSettings, indices: list[Any]) -> None:
    """The slow sweep behind the event-driven checks: waiting pods (a missed or early change)
    and the consumers of every cache."""
    namespaces: list[str | None] = list(settings.namespaces) or [None]
    first = True
    while True:
        try:
            await binder.check_waiting(namespaces, every_namespace=True)
            if not first:  # kopf's indices are complete once the first interval has passed
                known = {key: next(iter(store), None) for index in indices for key, store in index.items()}
                await binder.count_consumers(namespaces, known)
        except Exception:  # the apiserver may be away for a moment; the next round tries again
            logger.exception("pod resync failed")
        first = False
        await asyncio.sleep(settings.pod_resync_interval)


async def delete(
    kind: str,
    plural: str,
    what: str,
    controller: Finalizer,
    body: kopf.Body,
    memo: kopf.Memo,
    retry: int,
    settings: OperatorSettings,
) -> None:
    """The delete handler of both kinds: the finalizer goes once the cloud side is gone (or
    retained); until then kopf calls again. `what` names the cloud side in messages."""
    if is_paused(body.metadata):
        raise kopf.TemporaryError(f"paused: {what} not deleted until unpaused", delay=30)
    _wait_for_the_running_pass(memo, settings)
    done, events, status = await finalize_or_back_off(controller, body, retry, settings)
    if status is not None and status != own_status(body.get("status") or {}):
        await kube.patch_status(plural, body.metadata["namespace"], body.metadata["name"], status)
    post_events(body, events)
    if not done:
        raise kopf.TemporaryError(f"waiting until {what} deleted", delay=settings.poll_interval_loading)
    memo.metrics.objects.forget(kind, body.metadata.uid)


class Reconciler(Protocol):
    async def reconcile(self, body: Any) -> Any: ...


async def reconcile_loop(
    kind: str,
    plural: str,
    controller: Reconciler,
    settings: OperatorSettings,
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: Any,
) -> None:
    """The level-based loop of one object: a pass, its status and events, an adaptive sleep."""
    metrics: Metrics = memo.metrics
    passes: asyncio.Semaphore = memo.passes
    wake = wake_event(memo)
    meta = body.metadata
    while not stopped:
        if FINALIZER not in (meta.get("finalizers") or []) and not meta.get("deletionTimestamp"):
            # kopf starts a daemon in the same cycle as it asks for the finalizer: until the
            # object carries it, a deletion does not wait for us, and a cache this pass made
            # could outlive its object (the fault soak showed it with an object created while
            # no replica led and deleted right after the new leader started).
            await sleep_until_woken(FINALIZER_WAIT_S, stopped, wake)
            continue
        async with passes:  # bounds memory and CPU when many objects are due at once
            if meta.get("deletionTimestamp"):
                return  # the delete handler takes over
            # This pass reads the object as it is now: a change seen before it starts needs no
            # second pass (which would run before our own status write is seen, on an old body).
            wake.clear()
            memo.pass_running = True  # set before the first await: see _wait_for_the_running_pass
            try:
                with metrics.reconcile(kind) as outcome:
                    before = own_status(body.get("status") or {})
                    result = await controller.reconcile(body)
                    if result.status != before:
                        await kube.patch_status(plural, meta["namespace"], meta["name"], result.status)
                    post_events(body, result.events)
                    usable, failed = usable_change(
                        plural, before, result.status, settings.effective_cluster_region
                    )
                    ready = get_condition(result.status.get("conditions"), "Ready") or {}
                    outcome["result"] = "ready" if ready.get("status") == "True" else "not_ready"
                    metrics.objects.record(
                        kind, meta["uid"], result.status, f"{meta['namespace']}/{meta['name']}"
                    )
                delay = result.delay
            except Exception:  # an unexpected bug or API failure must not end the loop
                logger.exception(f"{kind} reconcile failed; retrying")
                delay, usable, failed = 10.0, False, False
            finally:
                memo.pass_running = False
        if usable or failed:  # waiting pods learn of it now, not at the next resync
            try:
                await memo.binder.cache_changed(meta["namespace"])
            except Exception:
                logger.exception("could not look at the pods waiting for this cache")
        delay = aligned_delay(delay, asyncio.get_running_loop().time(), settings)
        await sleep_until_woken(delay, stopped, wake)


def _wait_for_the_running_pass(memo: kopf.Memo, settings: OperatorSettings) -> None:
    """Finalize only once no reconcile pass of the object is running (memo is per object).

    kopf runs the delete handler while the daemon is still in its pass: a pass that began
    before the deletion may be creating the cache (or a copy) right now, after the
    finalizer's lookup found nothing, and the new cache would outlive its object.
    """
    if getattr(memo, "pass_running", False):
        raise kopf.TemporaryError(
            "waiting for the running reconcile pass to end", delay=settings.poll_interval_loading
        )


def changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> bool:
    """The `when` filter of the wake-up handlers: a new generation, pause flag or reconcile request."""
    seen = getattr(memo, "seen", None)
    if seen is None:
        # First sight (a new object, or any object after a restart): the daemon's first
        # pass reads it anyway, so no wake-up, no handler run and no event to post.
        memo.seen = trigger(body)
        return False
    return bool(seen != trigger(body))


def trigger(body: kopf.Body) -> tuple[Any, bool, str | None]:
    """What wakes a daemon early: a new generation, a changed pause flag or a new reconcile request."""
    return body.metadata.get("generation"), is_paused(body.metadata), reconcile_request(body.metadata)


def wake(body: kopf.Body, memo: kopf.Memo) -> None:
    """Reconcile now, not at the next poll."""
    memo.seen = trigger(body)
    wake_event(memo).set()


def wake_event(memo: kopf.Memo) -> asyncio.Event:
    wake = getattr(memo, "wake", None)
    if wake is None:
        wake = memo.wake = asyncio.Event()
    return wake
