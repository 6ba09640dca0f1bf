"""Batched reads and the per-region rate limit, verified from the emulator's call log."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from eci_datacache_emulator.admin_client import EmulatorAdmin

from datacache_operator.cloud import CreateRequest, EciClient

REGION = "cn-hangzhou"


def ids_of(call: dict[str, Any]) -> list[str]:
    return [v for k, v in call["params"].items() if k.startswith("DataCacheId.")]


async def create_many(eci: EciClient, count: int, region: str = REGION) -> list[str]:
    return [
        await eci.create(region, CreateRequest(path=f"/batch/{n}"), client_token=f"batch-{region}-{n}")
        for n in range(count)
    ]


async def test_45_concurrent_describes_make_3_calls(eci: EciClient, admin: EmulatorAdmin) -> None:
    ids = await create_many(eci, 44) + ["edc-notthere000000000"]
    before = len(admin.calls(action="DescribeDataCaches"))

    results = await asyncio.gather(*(eci.describe(REGION, i) for i in ids))

    calls = admin.calls(action="DescribeDataCaches")[before:]
    assert len(calls) == 3
    assert sorted(len(ids_of(c)) for c in calls) == [5, 20, 20]
    assert sorted(i for c in calls for i in ids_of(c)) == sorted(ids)
    assert all(c["params"]["Limit"] == "20" and c["outcome"] == "Success" for c in calls)
    assert [r.data_cache_id for r in results[:44]] == ids[:44]  # type: ignore[union-attr]
    assert results[44] is None


async def test_batching_off_is_one_call_per_object(
    make_client: Callable[..., EciClient], admin: EmulatorAdmin
) -> None:
    eci = make_client(batching=False)
    ids = await create_many(eci, 6)
    before = len(admin.calls(action="DescribeDataCaches"))
    await asyncio.gather(*(eci.describe(REGION, i) for i in ids))
    calls = admin.calls(action="DescribeDataCaches")[before:]
    assert len(calls) == 6 and all(len(ids_of(c)) == 1 for c in calls)


async def test_regions_are_batched_separately(eci: EciClient, admin: EmulatorAdmin) -> None:
    await asyncio.gather(
        eci.describe("cn-hangzhou", "edc-a00000000000"), eci.describe("cn-beijing", "edc-b0000000000")
    )
    regions = sorted(c["region"] for c in admin.calls(action="DescribeDataCaches"))
    assert regions == ["cn-beijing", "cn-hangzhou"]


async def test_rate_limit_is_honoured(
    make_client: Callable[..., EciClient], admin: EmulatorAdmin, hooks: Any
) -> None:
    rate, burst, count = 20, 2, 32
    eci = make_client(rate_limit=rate, rate_burst=burst, batching=False, hooks=hooks)
    arrivals: list[float] = []

    async def describe(n: int) -> Any:
        arrivals.append(time.monotonic())
        return await eci.describe("cn-shenzhen", f"edc-rate{n:012d}")

    started = time.monotonic()
    await asyncio.gather(*(describe(n) for n in range(count)))
    elapsed = time.monotonic() - started

    # A token bucket allows at most burst + rate * t calls in t seconds.
    assert elapsed >= (count - burst) / rate * 0.95
    calls = admin.calls(action="DescribeDataCaches", region="cn-shenzhen")
    assert len(calls) == count
    per_second = Counter(c["time"] for c in calls)  # the log's times have one-second precision
    assert max(per_second.values()) <= rate + burst + 1  # +1: arrival jitter at a second's edge
    # Callers that arrive later than the first find tokens accrued meanwhile: a stall of the
    # event loop (a garbage collection, the SDK's first call) while they start is not a wait.
    arrival_spread = max(arrivals) - min(arrivals)
    unwaited_at_most = burst + math.floor(rate * arrival_spread)
    assert len(hooks.waits) >= count - unwaited_at_most
    assert all(region == "cn-shenzhen" for region, _ in hooks.waits)

    # Another region has its own bucket: a burst there does not wait.
    waits_before = len(hooks.waits)
    await asyncio.gather(*(eci.describe("cn-qingdao", f"edc-q{n:015d}") for n in range(burst)))
    assert len(hooks.waits) == waits_before
