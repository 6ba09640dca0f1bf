"""Fixtures for the emulator tests: an emulator per test and official SDK clients.

Everything goes through the unmodified SDK except the few requests the SDK never sends
(no signature, stale timestamps, reused nonces): `emulator_support.send_raw` signs those.
"""

from __future__ import annotations

import os

# The SDK's credential modules read these at import time (the root conftest sets them too).
os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
os.environ.setdefault("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true")
for _proxy_variable in ("HTTP_PROXY", "http_proxy"):
    os.environ.pop(_proxy_variable, None)

from collections.abc import AsyncIterator, Iterator  # noqa: E402

import pytest  # noqa: E402
from alibabacloud_eci20180808.client import Client  # noqa: E402
from eci_datacache_emulator import Emulator, EmulatorConfig  # noqa: E402
from eci_datacache_emulator.admin_client import EmulatorAdmin  # noqa: E402
from emulator_support import ACCESS_KEY_ID, ACCESS_KEY_SECRET, make_client  # noqa: E402


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, seed=7)


@pytest.fixture
def emulator(emulator_config: EmulatorConfig) -> Iterator[Emulator]:
    with Emulator(emulator_config).in_thread() as running:
        yield running


@pytest.fixture
async def async_emulator(emulator_config: EmulatorConfig) -> AsyncIterator[Emulator]:
    async with Emulator(emulator_config) as running:
        yield running


@pytest.fixture
def admin(emulator: Emulator) -> EmulatorAdmin:
    return EmulatorAdmin(emulator.admin_url)


@pytest.fixture
def client(emulator: Emulator) -> Client:
    return make_client(emulator.endpoint)
