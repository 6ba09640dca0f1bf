"""The webhook's reads never wait behind the passes' Kubernetes calls: they have threads of
their own, so a pod is admitted while every thread of the passes is busy."""

from __future__ import annotations

import asyncio
import threading

from datacache_operator import kube


async def test_admission_reads_go_while_every_thread_of_the_passes_waits() -> None:
    release = threading.Event()
    busy = [
        asyncio.ensure_future(kube._in_thread(release.wait, 30)) for _ in range(kube._THREADS._max_workers)
    ]
    try:
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(kube._in_admission_thread(lambda: "admitted"), 5) == "admitted"
    finally:
        release.set()
        await asyncio.gather(*busy)
