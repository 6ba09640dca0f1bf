"""The cloud layer against the in-process emulator, through the unmodified SDK.

The emulator runs on a thread with its own event loop (``Emulator.in_thread()``), so the
synchronous admin client can be used from async tests without blocking the emulator, and
one emulator serves the whole session; each test starts from ``reset()``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

# alibabacloud_credentials reads its environment at import time: set this before anything
# imports it, so the default chain never probes IMDS or ~/.aliyun in tests.
os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
os.environ.setdefault("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true")
# The SDK would send loopback traffic through a proxy (it ignores NO_PROXY).
for _proxy_variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
    os.environ.pop(_proxy_variable, None)

import pytest  # noqa: E402
from eci_datacache_emulator import Emulator, EmulatorConfig  # noqa: E402
from eci_datacache_emulator.admin_client import EmulatorAdmin  # noqa: E402

from datacache_operator.cloud import EciClient  # noqa: E402
from datacache_operator.settings import OperatorSettings  # noqa: E402

ACCESS_KEY_ID = "cloud-test-access-key-id"
ACCESS_KEY_SECRET = "cloud-test-SECRET-never-shown-1f9a"
REGION = "cn-hangzhou"

T = TypeVar("T")


def static_credential(access_key_id: str = ACCESS_KEY_ID, access_key_secret: str = ACCESS_KEY_SECRET) -> Any:
    from alibabacloud_credentials.client import Client as CredentialClient
    from alibabacloud_credentials.models import Config as CredentialConfig

    return CredentialClient(
        CredentialConfig(type="access_key", access_key_id=access_key_id, access_key_secret=access_key_secret)
    )


class RecordingHooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, float]] = []
        self.waits: list[tuple[str, float]] = []

    def on_call(self, action: str, region: str, outcome_code: str, seconds: float) -> None:
        self.calls.append((action, region, outcome_code, seconds))

    def on_rate_limit_wait(self, region: str, seconds: float) -> None:
        self.waits.append((region, seconds))


class Keys:
    """The emulator's key pair, and static credential clients for any pair."""

    access_key_id = ACCESS_KEY_ID
    access_key_secret = ACCESS_KEY_SECRET
    credential = staticmethod(static_credential)


@pytest.fixture
def keys() -> type[Keys]:
    return Keys


@pytest.fixture
def hooks() -> RecordingHooks:
    return RecordingHooks()


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        rate_limit=0,  # our client's limiter is under test, not the emulator's
        seed=4,
    )
    with Emulator(config).in_thread() as running:
        yield running


@pytest.fixture
def admin(emulator: Emulator) -> Iterator[EmulatorAdmin]:
    client = EmulatorAdmin(emulator.admin_url)
    client.reset()
    yield client
    client.reset()


@pytest.fixture
async def make_client(emulator: Emulator) -> AsyncIterator[Callable[..., EciClient]]:
    """``make_client(credential=..., hooks=..., **settings)``: a client on the emulator."""
    clients: list[EciClient] = []

    def build(*, credential: Any = None, hooks: Any = None, **settings: Any) -> EciClient:
        values = {"endpoint": emulator.endpoint, "protocol": "http", "rate_limit": 1000, **settings}
        client = EciClient(
            OperatorSettings(**values), credential=credential or static_credential(), hooks=hooks
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


@pytest.fixture
def eci(make_client: Callable[..., EciClient], admin: EmulatorAdmin) -> EciClient:
    return make_client()


Eventually = Callable[..., Awaitable[Any]]


@pytest.fixture
def eventually() -> Eventually:
    return _eventually


async def _eventually(
    probe: Callable[[], Awaitable[T]],
    condition: Callable[[T], bool],
    *,
    within: float = 10.0,
    interval: float = 0.05,
    advance: Callable[[], object] | None = None,
) -> T:
    """Call ``probe`` until ``condition`` holds; fail with the last value at the deadline.
    ``advance`` runs between probes (e.g. move the emulator's clock)."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if condition(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s; last value: {value!r}")
        if advance is not None:
            advance()
        await asyncio.sleep(interval)
