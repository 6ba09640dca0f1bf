"""The leader's self-fencing: it acts only while its last renewal is younger than RenewDeadline,
and leaves (exits) the moment it is not, or when another replica holds the Lease."""

from __future__ import annotations

import pytest

from datacache_operator.leader import LeaderElection, LeaseHandedOver
from datacache_operator.settings import OperatorSettings


class Exited(Exception):
    pass


def election(results: list[bool | Exception], now: list[float]) -> LeaderElection:
    settings = OperatorSettings(
        leader_election_lease_duration=15,
        leader_election_renew_deadline=10,
        leader_election_retry_period=0.01,
    )

    def exit_(code: int) -> None:
        raise Exited(code)

    chosen = LeaderElection(settings, identity="me", clock=lambda: now[0], exit=exit_)

    def attempt() -> bool:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    chosen._try_acquire_or_renew = attempt  # type: ignore[method-assign]
    return chosen


async def test_a_fresh_renewal_allows_acting_and_a_stale_one_exits():
    now = [100.0]
    leader = election([True], now)
    assert await leader._round()
    leader.leading = True
    leader.check_may_act()
    now[0] = 109.9
    leader.check_may_act()
    now[0] = 110.0  # frozen for RenewDeadline: no action, exit
    with pytest.raises(Exited):
        leader.check_may_act()
    assert not leader.leading


async def test_a_replica_that_never_led_may_not_act():
    with pytest.raises(Exited):
        election([], [0.0]).check_may_act()


async def test_keeping_ends_when_renewals_fail_past_the_deadline_or_another_holds_it():
    now = [0.0]
    leader = election([True, RuntimeError("apiserver away"), False, False], now)
    assert await leader._round()

    async def fake_sleep(_: float) -> None:
        now[0] += 4

    import datacache_operator.leader as module

    real_sleep = module.asyncio.sleep
    module.asyncio.sleep = fake_sleep  # type: ignore[assignment]
    try:
        reason = await leader.keep()
    finally:
        module.asyncio.sleep = real_sleep  # type: ignore[assignment]
    assert "within 10 s" in reason and now[0] >= 10

    other = election([False], [0.0])
    other._observed = {"holderIdentity": "them"}
    other._renewed_at = 0.0
    assert await other.keep() == "the lease is held by them"


def test_the_timings_must_leave_room_for_renewals():
    with pytest.raises(ValueError, match="LEASE_DURATION > RENEW_DEADLINE"):
        OperatorSettings(leader_election_lease_duration=10, leader_election_renew_deadline=10)
    with pytest.raises(ValueError, match="1.2 x RETRY_PERIOD"):
        OperatorSettings(leader_election_renew_deadline=2, leader_election_retry_period=2)


async def test_after_handing_the_lease_over_an_action_is_refused_not_fatal():
    """The leader hands the Lease over as soon as its passes have stopped, before the rest of
    its shutdown; anything that still tries to act is refused, and the process is not made to
    exit as if the Lease had been lost."""
    now = [100.0]
    leader = election([True], now)
    assert await leader._round()
    leader.leading = True
    released: list[bool] = []
    leader._release = lambda: released.append(True)  # type: ignore[method-assign]
    await leader.release()
    assert released == [True] and not leader.leading
    with pytest.raises(LeaseHandedOver):
        leader.check_may_act()
    await leader.release()  # once only
    assert released == [True]
