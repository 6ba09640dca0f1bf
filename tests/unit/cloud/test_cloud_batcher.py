"""DescribeBatcher: grouping into calls of at most 20 ids, per key, errors to every reader."""

from __future__ import annotations

import asyncio

import pytest

from datacache_operator.cloud.batcher import DescribeBatcher, chunked
from datacache_operator.cloud.errors import EciError


class RecordingFetch:
    def __init__(self, missing: frozenset[str] = frozenset(), error: Exception | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.missing = missing
        self.error = error
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, key: str, ids: list[str]) -> dict[str, str]:
        self.calls.append((key, list(ids)))
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return {i: f"{key}/{i}" for i in ids if i not in self.missing}


def test_chunked_removes_duplicates_and_keeps_order() -> None:
    ids = [f"edc-{n}" for n in range(45)] + ["edc-0", "edc-44"]
    chunks = chunked(ids)
    assert [len(c) for c in chunks] == [20, 20, 5]
    assert [i for c in chunks for i in c] == [f"edc-{n}" for n in range(45)]
    assert chunked([]) == []


async def test_45_concurrent_reads_make_3_calls_of_at_most_20() -> None:
    fetch = RecordingFetch(missing=frozenset({"edc-7"}))
    batcher = DescribeBatcher(fetch, window=0.02)
    ids = [f"edc-{n}" for n in range(45)]
    results = await asyncio.gather(*(batcher.get("cn-hangzhou", i) for i in ids))
    assert sorted(len(ids) for _, ids in fetch.calls) == [5, 20, 20]
    assert sorted(i for _, call_ids in fetch.calls for i in call_ids) == sorted(ids)
    assert results[0] == "cn-hangzhou/edc-0"
    assert results[7] is None  # not listed: gone


async def test_same_id_read_twice_is_fetched_once() -> None:
    fetch = RecordingFetch()
    batcher = DescribeBatcher(fetch, window=0.01)
    a, b = await asyncio.gather(batcher.get("r", "edc-1"), batcher.get("r", "edc-1"))
    assert a == b == "r/edc-1"
    assert fetch.calls == [("r", ["edc-1"])]


async def test_keys_are_batched_separately() -> None:
    fetch = RecordingFetch()
    batcher = DescribeBatcher(fetch, window=0.01)
    await asyncio.gather(batcher.get("cn-hangzhou", "edc-1"), batcher.get("cn-beijing", "edc-2"))
    assert sorted(fetch.calls) == [("cn-beijing", ["edc-2"]), ("cn-hangzhou", ["edc-1"])]


async def test_full_batch_is_sent_without_waiting_for_the_window() -> None:
    fetch = RecordingFetch()
    batcher = DescribeBatcher(fetch, window=3600)  # the window would never end in this test
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.get("r", f"edc-{n}") for n in range(20))), timeout=5
    )
    assert len(results) == 20 and len(fetch.calls) == 1


async def test_reads_that_keep_coming_within_the_window_share_one_call() -> None:
    """Passes due together reach their reads a little apart on a busy loop: the window
    counts from the last new id, so six reads spread over half a window go in one call."""
    fetch = RecordingFetch()
    batcher = DescribeBatcher(fetch, window=0.5)
    reads = []
    for n in range(6):  # 0.25 s from the first to the last read, each 0.05 s after the one before
        reads.append(asyncio.ensure_future(batcher.get("r", f"edc-{n}")))
        await asyncio.sleep(0.05)
    await asyncio.gather(*reads)
    assert fetch.calls == [("r", [f"edc-{n}" for n in range(6)])]


async def test_a_batch_is_sent_once_its_first_read_waited_the_longest_wait() -> None:
    fetch = RecordingFetch()
    batcher = DescribeBatcher(fetch, window=0.5, max_wait=0.2)
    reads = []
    for n in range(12):  # a steady trickle that never leaves the window quiet
        reads.append(asyncio.ensure_future(batcher.get("r", f"edc-{n}")))
        await asyncio.sleep(0.05)
    await asyncio.gather(*reads)
    assert len(fetch.calls) >= 2
    assert sorted(i for _, ids in fetch.calls for i in ids) == sorted(f"edc-{n}" for n in range(12))


async def test_reads_after_a_sent_batch_start_a_new_one() -> None:
    fetch = RecordingFetch()
    batcher = DescribeBatcher(fetch, window=0.01)
    await batcher.get("r", "edc-1")
    await batcher.get("r", "edc-2")
    assert fetch.calls == [("r", ["edc-1"]), ("r", ["edc-2"])]


async def test_concurrent_gets_share_one_call_per_distinct_id() -> None:
    fetch = RecordingFetch(missing=frozenset({"b"}))
    batcher = DescribeBatcher(fetch, window=0.01)
    found = await asyncio.gather(*(batcher.get("r", i) for i in ("a", "b", "a")))
    assert found == ["r/a", None, "r/a"]
    assert fetch.calls == [("r", ["a", "b"])]


async def test_a_failed_call_fails_every_reader_of_its_chunk_with_its_own_copy() -> None:
    error = EciError("Throttling.User", "slow down", http_status=400, retryable=True, retry_after=0.5)
    batcher = DescribeBatcher(RecordingFetch(error=error), window=0.01)
    outcomes = await asyncio.gather(batcher.get("r", "a"), batcher.get("r", "b"), return_exceptions=True)
    assert all(isinstance(o, EciError) and o.code == "Throttling.User" for o in outcomes)
    assert outcomes[0] is not outcomes[1]
    assert outcomes[0].retry_after == 0.5  # type: ignore[union-attr]


async def test_a_cancelled_reader_does_not_disturb_the_others() -> None:
    fetch = RecordingFetch()
    batcher = DescribeBatcher(fetch, window=0.05)
    gone = asyncio.ensure_future(batcher.get("r", "only-me"))
    kept = asyncio.ensure_future(batcher.get("r", "kept"))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == "r/kept"
    assert fetch.calls == [("r", ["kept"])]  # nobody wanted "only-me" any more


async def test_close_fails_pending_readers_and_refuses_new_ones() -> None:
    fetch = RecordingFetch()
    batcher = DescribeBatcher(fetch, window=3600)
    pending = asyncio.ensure_future(batcher.get("r", "a"))
    await asyncio.sleep(0)
    await batcher.aclose()
    with pytest.raises(RuntimeError):
        await pending
    with pytest.raises(RuntimeError):
        await batcher.get("r", "b")
    assert fetch.calls == []


def test_max_batch_is_bounded_by_the_api() -> None:
    with pytest.raises(ValueError):
        DescribeBatcher(RecordingFetch(), window=0, max_batch=21)
