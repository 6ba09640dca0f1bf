"""Delete handlers: a retryable ECI error while finalizing backs off like a reconcile pass
(seconds), not kopf's default of a minute for an exception (found by the fault soak)."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from datacache_operator.cloud.errors import EciError
from datacache_operator.controllers.base import Event
from datacache_operator.runtime import finalize_or_back_off
from datacache_operator.settings import OperatorSettings


class Finalizing:
    def __init__(self, error: EciError | None = None) -> None:
        self.error = error

    async def finalize(self, body: Any) -> tuple[bool, list[Event], None]:
        if self.error:
            raise self.error
        return True, [Event("Normal", "Deleted", "gone")], None


def settings() -> OperatorSettings:
    return OperatorSettings(poll_interval_loading=0.5, poll_interval_stable=3)


async def test_a_retryable_error_is_a_temporary_error_with_a_short_backoff():
    for code, status in (("Throttling.User", 400), ("InternalError", 500), ("ServiceUnavailable", 503)):
        error = EciError(code, "try later", http_status=status)
        for retry in range(6):
            with pytest.raises(kopf.TemporaryError) as raised:
                await finalize_or_back_off(Finalizing(error), {}, retry, settings())
            assert raised.value.delay is not None and 0 < raised.value.delay <= 3, (code, retry)
            assert code in str(raised.value)


async def test_the_server_retry_after_wins():
    error = EciError("Throttling.User", "slow down", http_status=400, retry_after=7.0)
    with pytest.raises(kopf.TemporaryError) as raised:
        await finalize_or_back_off(Finalizing(error), {}, 0, settings())
    assert raised.value.delay == 7.0


async def test_a_terminal_error_is_raised_as_it_is():
    error = EciError("Forbidden.RAM", "no permission", http_status=403)
    assert not error.retryable
    with pytest.raises(EciError):
        await finalize_or_back_off(Finalizing(error), {}, 0, settings())


async def test_success_passes_through():
    done, events, status = await finalize_or_back_off(Finalizing(), {}, 0, settings())
    assert status is None
    assert done and events[0].reason == "Deleted"
