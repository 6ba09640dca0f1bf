"""The per-object loop acts only on an object that carries our finalizer: kopf starts the
daemon in the same cycle as it asks for the finalizer, and a cache made before it is on the
object could outlive an object deleted in between."""

from __future__ import annotations

import asyncio
import types
from typing import Any

from datacache_operator import runtime
from datacache_operator.controllers.base import PassResult
from datacache_operator.metrics import Metrics
from datacache_operator.settings import OperatorSettings


class Body(dict):  # type: ignore[type-arg]
    @property
    def metadata(self) -> dict[str, Any]:
        return self["metadata"]  # type: ignore[no-any-return]


class Stopped:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    async def wait(self) -> None:
        await self.event.wait()


class Controller:
    def __init__(self, body: Body) -> None:
        self.body = body
        self.finalizers_seen: list[list[str]] = []

    async def reconcile(self, body: Any) -> PassResult:
        self.finalizers_seen.append(list(body.metadata.get("finalizers") or []))
        return PassResult(status={}, delay=1.0)


async def test_no_pass_runs_until_the_finalizer_is_on_the_object(monkeypatch: Any):
    body = Body(metadata={"uid": "u1", "namespace": "ml", "name": "qwen"})
    controller = Controller(body)
    stopped = Stopped()
    sleeps: list[float] = []

    async def sleep(delay: float, stopped_: Any, wake: asyncio.Event) -> None:
        sleeps.append(delay)
        if len(sleeps) == 3:  # kopf's finalizer patch lands (seen through the live body)
            body["metadata"]["finalizers"] = [runtime.FINALIZER]
        if controller.finalizers_seen:
            stopped.event.set()
        await asyncio.sleep(0)

    monkeypatch.setattr(runtime, "sleep_until_woken", sleep)
    memo = types.SimpleNamespace(metrics=Metrics(), passes=asyncio.Semaphore(1))
    settings = OperatorSettings(batching=False)
    await asyncio.wait_for(
        runtime.reconcile_loop("DataCache", "datacaches", controller, settings, body, memo, stopped, None),
        timeout=10,
    )
    assert sleeps[:3] == [runtime.FINALIZER_WAIT_S] * 3  # waited, made no pass
    assert controller.finalizers_seen == [[runtime.FINALIZER]]  # then exactly one pass, protected
