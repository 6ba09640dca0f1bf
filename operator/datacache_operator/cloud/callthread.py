"""A thread with an event loop of its own, where the rate limit runs and every ECI call is
awaited (the SDK's blocking calls themselves run in the client's pool of threads).

Why not the operator's loop: that loop also takes kopf's watch events, the scheduler and
the passes. When a burst of objects keeps it busy, each ``await`` inside an SDK call
resumes late, and the call keeps its rate-limit slot for that long: the limiter counts a
call from its token until a second after its answer (the receiving-end bound), so late
resumptions would let far fewer calls go in a second than the limit allows while callers
wait. Here the calls only share the interpreter's lock, not a queue of other work.

The loop starts with the first call and stops with :meth:`CallThread.close`. Cancelling
the awaiting task cancels its coroutine in this thread too (a call already sent keeps its
rate-limit slot until answered: see ``EciClient._limited_call``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class CallThread:
    def __init__(self, name: str = "eci-calls") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._serve, args=(loop,), name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def run(self, call: Coroutine[Any, Any, T]) -> T:
        """Run ``call`` in the thread's loop; its result or exception, here."""
        future = asyncio.run_coroutine_threadsafe(call, self._running_loop())
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop the loop (calls still running are cancelled) and wait for the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
