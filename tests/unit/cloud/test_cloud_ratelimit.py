"""Token buckets on a virtual clock: no real sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random

import pytest

from datacache_operator.cloud.ratelimit import CallPriority, RegionRateLimiter, TokenBucket


class VirtualClock:
    """``now()`` and ``sleep()`` on virtual time; ``run(coro)`` advances time whenever
    every task is blocked on a virtual sleep."""

    def __init__(self) -> None:
        self.time = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.time + seconds, next(self._order), future))
        await future

    async def run(self, coro):  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coro)
        while not task.done():
            for _ in range(20):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if task.done():
                break
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)  # cancelled sleepers
            if not self._sleepers:
                continue
            wake_at, _, future = heapq.heappop(self._sleepers)
            self.time = max(self.time, wake_at)
            future.set_result(None)
        return task.result()


async def call(bucket: TokenBucket, priority: int = CallPriority.POLL) -> float:
    """One call whose answer comes back at once: the seconds it waited."""
    async with bucket.slot(priority) as granted:
        return granted.waited


async def test_full_bucket_serves_the_burst_without_waiting() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(rate=2, burst=5, clock=clock.now, sleep=clock.sleep)
    waits = [await clock.run(call(bucket)) for _ in range(5)]
    assert waits == [0.0] * 5
    assert clock.time == 1000.0


async def test_after_the_burst_calls_are_spaced_by_one_over_rate() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(rate=4, burst=2, clock=clock.now, sleep=clock.sleep)
    times = []
    for _ in range(6):
        await clock.run(call(bucket))
        times.append(clock.time - 1000.0)
    assert times == pytest.approx([0, 0, 0.25, 0.5, 0.75, 1.0])


async def test_concurrent_callers_are_served_in_order_and_never_above_the_rate() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock.now, sleep=clock.sleep)
    served: list[tuple[int, float]] = []

    async def caller(n: int) -> None:
        await call(bucket)
        served.append((n, clock.time))

    async def all_callers() -> None:
        await asyncio.gather(*(caller(n) for n in range(33)))

    await clock.run(all_callers())
    assert [n for n, _ in served] == list(range(33))  # FIFO within a priority
    times = [t - 1000.0 for _, t in served]
    # Never more than burst + rate * t calls within any window of t seconds.
    for i, start in enumerate(times):
        in_one_second = sum(1 for t in times[i:] if t < start + 1.0 - 1e-9)
        assert in_one_second <= 3 + 10
    assert times[-1] == pytest.approx((33 - 3) / 10)


async def test_a_change_goes_ahead_of_every_queued_poll() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(rate=10, burst=1, clock=clock.now, sleep=clock.sleep)
    order: list[str] = []

    async def caller(name: str, priority: int) -> None:
        await call(bucket, priority)
        order.append(name)

    async def arrivals() -> None:
        polls = [asyncio.ensure_future(caller(f"poll-{n}", CallPriority.POLL)) for n in range(30)]
        await clock.sleep(0.35)  # three polls have gone; 27 wait
        create = asyncio.ensure_future(caller("create", CallPriority.CHANGE))
        await asyncio.gather(create, *polls)

    await clock.run(arrivals())
    assert order[:5] == ["poll-0", "poll-1", "poll-2", "poll-3", "create"]
    assert order[5:] == [f"poll-{n}" for n in range(4, 30)]  # then the polls, in arrival order


async def test_bucket_refills_while_idle_but_not_above_burst() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(rate=1, burst=3, clock=clock.now, sleep=clock.sleep)
    for _ in range(3):
        await clock.run(call(bucket))
    assert bucket.tokens == pytest.approx(0)
    clock.time += 100
    assert bucket.tokens == pytest.approx(3)


async def test_a_cancelled_waiter_takes_no_turn() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock.now, sleep=clock.sleep)
    await clock.run(call(bucket))
    cancelled = asyncio.ensure_future(call(bucket))
    await asyncio.sleep(0)
    assert bucket.waiting == 1
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await clock.run(call(bucket))
    assert clock.time == pytest.approx(1001.0)  # the next caller went when its token accrued
    assert bucket.waiting == 0 and bucket.in_flight == 0


async def test_regions_have_separate_buckets_and_waits_are_reported() -> None:
    clock = VirtualClock()
    waits: list[tuple[str, float]] = []
    limiter = RegionRateLimiter(
        rate=2, burst=1, clock=clock.now, sleep=clock.sleep, on_wait=lambda r, s: waits.append((r, s))
    )

    async def one(region: str) -> None:
        async with limiter.slot(region):
            pass

    await clock.run(one("cn-hangzhou"))
    await clock.run(one("cn-beijing"))  # its own full bucket
    assert clock.time == 1000.0 and waits == []
    await clock.run(one("cn-hangzhou"))
    assert waits == [("cn-hangzhou", pytest.approx(0.5))]


async def test_queued_seconds_is_how_long_the_waiting_calls_of_the_busiest_region_take() -> None:
    clock = VirtualClock()
    limiter = RegionRateLimiter(rate=4, burst=1, clock=clock.now, sleep=clock.sleep)
    assert limiter.queued_seconds() == 0.0
    release = asyncio.Event()

    async def one(region: str) -> None:
        async with limiter.slot(region):
            await release.wait()

    calls = [asyncio.ensure_future(one("cn-hangzhou")) for _ in range(9)]
    calls.append(asyncio.ensure_future(one("cn-beijing")))
    for _ in range(5):
        await asyncio.sleep(0)
    # one call of each region has its token; eight wait in cn-hangzhou, at four a second
    assert limiter.queued_seconds() == pytest.approx(2.0)
    release.set()
    await clock.run(asyncio.gather(*calls))
    assert limiter.queued_seconds() == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0)])
def test_invalid_parameters(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst)


def most_in_one_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max(sum(1 for t in ordered[i:] if t < start + 1.0 - 1e-9) for i, start in enumerate(ordered))


async def test_arrivals_at_the_cloud_keep_the_bound_whatever_the_network_delays() -> None:
    """Each call reaches the cloud somewhere between its start and its answer (0 to 400 ms
    later, at random): no one-second window of arrivals holds more than the limit."""
    clock = VirtualClock()
    bucket = TokenBucket(rate=20, burst=1, clock=clock.now, sleep=clock.sleep)
    rng = random.Random(7)
    arrivals: list[float] = []

    async def caller() -> None:
        async with bucket.slot() as granted:
            await clock.sleep(rng.uniform(0, 0.4))  # on its way
            arrivals.append(clock.time)
            await clock.sleep(rng.uniform(0, 0.05))  # the answer on its way back
            granted.answered(clock.now())
            await clock.sleep(rng.uniform(0, 0.2))  # the caller's loop hands the slot back late

    async def all_callers() -> None:
        await asyncio.gather(*(caller() for _ in range(200)))

    await clock.run(all_callers())
    assert len(arrivals) == 200
    assert most_in_one_second(arrivals) <= bucket.window == 20
    # The price: a slot is held for the call's own time too (here up to 0.45 s of each 1.45 s).
    assert 200 / 20 <= clock.time - 1000.0 < 200 / 20 * 1.45


async def test_callers_woken_late_still_keep_the_one_second_bound() -> None:
    """A busy event loop wakes every sleeper late at once: they must not all go together."""
    clock = VirtualClock()
    bucket = TokenBucket(rate=4, burst=1, clock=clock.now, sleep=clock.sleep)
    planned_sleep = clock.sleep

    async def late_sleep(seconds: float) -> None:
        # The loop is stuck until t=2: every sleeper planned before then wakes at t=2.
        await planned_sleep(max(seconds, 2.0 - (clock.time - 1000.0)))

    bucket._sleep = late_sleep
    served: list[float] = []

    async def caller() -> None:
        await call(bucket)
        served.append(clock.time - 1000.0)

    async def all_callers() -> None:
        await asyncio.gather(*(caller() for _ in range(12)))

    await clock.run(all_callers())
    assert served[0] == 0.0
    assert most_in_one_second(served) <= 1 + 4 - 1


async def test_a_dispatcher_woken_late_still_serves_the_configured_rate() -> None:
    """On a busy event loop every sleep ends a little late (here 2.5 ms at a rate of 100,
    burst 1): the tokens that accrued meanwhile go to the waiting callers, so a backlog is
    served at the rate, not at 1 / (1 / rate + lateness) = 80 a second, and no second holds
    more than the limit."""
    clock = VirtualClock()
    bucket = TokenBucket(rate=100, burst=1, clock=clock.now, sleep=clock.sleep)
    planned_sleep = clock.sleep

    async def late_sleep(seconds: float) -> None:
        await planned_sleep(seconds + 0.0025)

    bucket._sleep = late_sleep
    served: list[float] = []

    async def caller() -> None:
        await call(bucket, CallPriority.CHANGE)
        served.append(clock.time - 1000.0)

    async def all_callers() -> None:
        await asyncio.gather(*(caller() for _ in range(500)))

    await clock.run(all_callers())
    assert len(served) == 500
    assert served[-1] == pytest.approx(499 / 100, abs=0.02)  # 6.24 s when lateness is lost
    assert most_in_one_second(served) <= bucket.window == 100
    # Once the backlog is gone, an idle bucket saves no more than its burst again.
    clock.time += 10
    assert bucket.tokens == pytest.approx(1)


async def test_a_slot_frees_a_second_after_the_answer_not_after_its_caller_got_round_to_it() -> None:
    """The window counts a call from its answer: a caller whose loop hands the slot back
    late (here 0.5 s) does not hold the next call back by that much."""
    clock = VirtualClock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock.now, sleep=clock.sleep)  # window 1
    starts: list[float] = []

    async def late_caller(answered: bool) -> None:
        async with bucket.slot() as granted:
            starts.append(clock.time)
            if answered:
                granted.answered(clock.now())
            await clock.sleep(0.5)  # the answer is back; the slot is given back 0.5 s later

    async def two(answered: bool) -> None:
        await asyncio.gather(late_caller(answered), late_caller(answered))

    await clock.run(two(answered=True))
    assert [t - starts[0] for t in starts] == pytest.approx([0, 1.0])
    starts.clear()
    await clock.run(two(answered=False))  # unknown answer time: a second after the hand-back
    assert [t - starts[0] for t in starts] == pytest.approx([0, 1.5])


async def test_namespaces_take_turns_so_a_flood_from_one_does_not_starve_another() -> None:
    """Team A queues 100 creates; team B's 3, arriving later, go within its first turns, not
    after team A's backlog (at 10 a second that backlog is 10 s)."""
    clock = VirtualClock()
    bucket = TokenBucket(rate=10, burst=1, clock=clock.now, sleep=clock.sleep)
    served: list[tuple[str, float]] = []

    async def caller(flow: str) -> None:
        async with bucket.slot(CallPriority.CHANGE, flow):
            served.append((flow, clock.time - 1000.0))

    async def arrivals() -> None:
        flood = [asyncio.ensure_future(caller("team-a")) for _ in range(100)]
        await clock.sleep(0.25)  # team A's first calls have gone; 97 wait
        few = [asyncio.ensure_future(caller("team-b")) for _ in range(3)]
        await asyncio.gather(*flood, *few)

    await clock.run(arrivals())
    team_b = [at for flow, at in served if flow == "team-b"]
    assert len(team_b) == 3 and max(team_b) <= 1.0  # served in turn with team A's, within a second
    team_a = [flow for flow, _ in served if flow == "team-a"]
    assert len(team_a) == 100  # and team A loses nothing


async def test_a_floods_changes_do_not_move_another_namespaces_polls_behind_the_flood() -> None:
    """Team A's passes each poll, then create: its creates (a priority of their own) carry turns
    after all its queued polls. Granting one must not make team B's polls, arriving later,
    wait behind team A's whole backlog of polls (the flood measured 9 s of that)."""
    clock = VirtualClock()
    bucket = TokenBucket(rate=10, burst=1, clock=clock.now, sleep=clock.sleep)
    served: list[tuple[str, str, float]] = []

    async def call(flow: str, priority: CallPriority) -> None:
        async with bucket.slot(priority, flow):
            served.append((flow, priority.name, clock.time - 1000.0))

    async def team_a_pass() -> None:
        await call("team-a", CallPriority.POLL)
        await call("team-a", CallPriority.CHANGE)

    async def arrivals() -> None:
        flood = [asyncio.ensure_future(team_a_pass()) for _ in range(60)]
        await clock.sleep(0.55)  # some of team A's creates have gone
        few = [asyncio.ensure_future(call("team-b", CallPriority.POLL)) for _ in range(3)]
        await asyncio.gather(*flood, *few)

    await clock.run(arrivals())
    assert any(p == "CHANGE" and at < 0.55 for flow, p, at in served if flow == "team-a")
    team_b = [at for flow, _, at in served if flow == "team-b"]
    assert len(team_b) == 3 and max(team_b) <= 1.6, served[:20]


async def test_one_bucket_for_all_regions_holds_calls_to_two_regions_together_to_the_rate() -> None:
    """An account's limiter: 80 calls to two regions at once, each reaching the cloud between
    its start and its answer, never more than the rate in one second all regions together
    (burst 1: the window is ``burst + ceil(rate) - 1`` = the rate). Waits are reported with
    each call's own region."""
    clock = VirtualClock()
    waits: list[tuple[str, float]] = []
    limiter = RegionRateLimiter(
        rate=4,
        burst=1,
        clock=clock.now,
        sleep=clock.sleep,
        on_wait=lambda region, seconds: waits.append((region, seconds)),
        one_bucket_for_all_regions=True,
    )
    assert limiter.bucket("cn-hangzhou") is limiter.bucket("cn-beijing")
    rng = random.Random(11)
    arrivals: list[tuple[str, float]] = []

    async def caller(region: str) -> None:
        async with limiter.slot(region) as granted:
            await clock.sleep(rng.uniform(0, 0.2))  # on its way
            arrivals.append((region, clock.time))
            await clock.sleep(rng.uniform(0, 0.05))  # the answer on its way back
            granted.answered(clock.now())

    async def all_callers() -> None:
        await asyncio.gather(*(caller(("cn-hangzhou", "cn-beijing")[n % 2]) for n in range(80)))

    await clock.run(all_callers())
    assert len(arrivals) == 80
    assert most_in_one_second([at for _, at in arrivals]) <= 4
    assert {region for region, _ in waits} == {"cn-hangzhou", "cn-beijing"}
    assert len(waits) == 79  # all but the first waited for the one bucket
    assert limiter.queued_seconds() == 0.0


async def test_one_bucket_for_all_regions_still_serves_a_change_before_another_regions_polls() -> None:
    """Priorities take turns across regions in the shared bucket: a create in one region,
    arriving behind 20 queued polls in another, is the next call granted."""
    clock = VirtualClock()
    limiter = RegionRateLimiter(
        rate=10, burst=1, clock=clock.now, sleep=clock.sleep, one_bucket_for_all_regions=True
    )
    served: list[str] = []

    async def one(region: str, priority: CallPriority, name: str) -> None:
        async with limiter.slot(region, priority):
            served.append(name)

    async def arrivals() -> None:
        polls = [asyncio.ensure_future(one("cn-hangzhou", CallPriority.POLL, "poll")) for _ in range(20)]
        await asyncio.sleep(0)
        change = asyncio.ensure_future(one("cn-beijing", CallPriority.CHANGE, "change"))
        await asyncio.gather(*polls, change)

    await clock.run(arrivals())
    assert served[:2] == ["poll", "change"]  # the first poll took the only token at once
    assert clock.time - 1000.0 == pytest.approx(20 / 10)


async def test_per_region_buckets_let_two_regions_together_exceed_the_rate() -> None:
    """Without the option (the operator's own client) each region has the rate to itself."""
    clock = VirtualClock()
    limiter = RegionRateLimiter(rate=4, burst=1, clock=clock.now, sleep=clock.sleep)
    started: list[float] = []

    async def one(region: str) -> None:
        async with limiter.slot(region):
            started.append(clock.time)

    async def all_callers() -> None:
        await asyncio.gather(*(one(("cn-hangzhou", "cn-beijing")[n % 2]) for n in range(16)))

    await clock.run(all_callers())
    assert most_in_one_second(started) == 8
