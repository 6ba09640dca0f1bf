"""Quota, rate limiting and each injected fault, as the official SDK experiences them."""

from __future__ import annotations

import time

import aiohttp
import pytest
from alibabacloud_eci20180808 import models
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException, ThrottlingException
from darabonba.exceptions import UnretryableException
from eci_datacache_emulator import Emulator, EmulatorConfig
from eci_datacache_emulator.admin_client import EmulatorAdmin, EmulatorAdminError
from emulator_support import ONE_HOUR, OTHER_REGION, REGION, create_request, describe, make_client


async def set_faults_async(emulator: Emulator, **settings) -> None:
    # The emulator shares this test's event loop: a blocking admin call would stall it.
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{emulator.admin_url}/faults", json=settings) as response:
            assert response.status == 200


@pytest.fixture
def emulator_config(emulator_config: EmulatorConfig) -> EmulatorConfig:
    emulator_config.quota = 2
    return emulator_config


def test_quota_per_region(client, admin):
    first = client.create_data_cache(create_request("/a")).body.data_cache_id
    client.create_data_cache(create_request("/b"))
    with pytest.raises(ClientException) as caught:
        client.create_data_cache(create_request("/c"))
    assert (caught.value.code, caught.value.status_code) == ("QuotaExceeded", 403)
    client.create_data_cache(create_request("/c", region_id=OTHER_REGION))  # another region, another quota

    admin.advance(ONE_HOUR)
    client.create_data_cache(create_request("/d", region_id=OTHER_REGION))
    with pytest.raises(ClientException) as copy_error:
        client.copy_data_cache(
            models.CopyDataCacheRequest(
                region_id=REGION, data_cache_id=first, destination_region_id=OTHER_REGION
            )
        )
    assert copy_error.value.code == "QuotaExceeded"


def test_rate_limit_throttles_with_retry_after():
    config = EmulatorConfig(access_key_id="k", access_key_secret="s", rate_limit=3)
    with Emulator(config).in_thread() as emulator:
        client = make_client(emulator.endpoint, access_key_id="k", access_key_secret="s")
        with pytest.raises(ThrottlingException) as caught:
            for _ in range(10):
                describe(client)
        assert (caught.value.code, caught.value.status_code) == ("Throttling.User", 400)
        assert 0 < caught.value.retry_after <= 1000
        time.sleep(caught.value.retry_after / 1000)  # the server said when to come back
        describe(client)
        outcomes = EmulatorAdmin(emulator.admin_url).counters()["DescribeDataCaches"]
        assert outcomes["Throttling.User"] == 1 and outcomes["Success"] >= 4


@pytest.mark.parametrize(
    ("fault", "exception", "code", "status"),
    [
        ("fault_500_rate", ServerException, "InternalError", 500),
        ("fault_503_rate", ServerException, "ServiceUnavailable", 503),
        ("fault_throttle_rate", ThrottlingException, "Throttling.User", 400),
    ],
)
def test_error_faults(client, admin, fault, exception, code, status):
    admin.set_faults(**{fault: 1.0})
    with pytest.raises(exception) as caught:
        describe(client)
    assert (caught.value.code, caught.value.status_code) == (code, status)
    if exception is ThrottlingException:
        assert caught.value.retry_after == 200
    admin.clear_faults()
    assert describe(client).total_count == 0


async def test_error_faults_reach_the_async_client(async_emulator):
    await set_faults_async(async_emulator, fault_503_rate=1.0)
    client = make_client(async_emulator.endpoint)
    with pytest.raises(ServerException) as caught:
        await client.describe_data_caches_async(models.DescribeDataCachesRequest(region_id=REGION))
    assert caught.value.code == "ServiceUnavailable"


def test_latency_fault(client, admin):
    admin.set_faults(fault_latency_ms=300)
    started = time.monotonic()
    describe(client)
    assert time.monotonic() - started >= 0.3
    assert admin.calls()[-1]["latency_ms"] >= 300


def test_dropped_connection(client, admin):
    admin.set_faults(fault_drop_rate=1.0)
    with pytest.raises(UnretryableException):
        describe(client)
    assert admin.calls()[-1]["outcome"] == "ConnectionDropped"
    admin.clear_faults()
    assert describe(client).total_count == 0  # the pooled connection is replaced


async def test_dropped_connection_async(async_emulator):
    await set_faults_async(async_emulator, fault_drop_rate=1.0)
    client = make_client(async_emulator.endpoint)
    with pytest.raises(UnretryableException):
        await client.describe_data_caches_async(models.DescribeDataCachesRequest(region_id=REGION))


def test_drop_after_apply_loses_the_answer_not_the_create(client, admin):
    admin.set_faults(fault_drop_rate=1.0, drop_after_apply=True, actions=["CreateDataCache"])
    with pytest.raises(UnretryableException):
        client.create_data_cache(create_request(client_token="uid-lost"))
    assert describe(client).total_count == 1  # Describe is not faulted
    assert admin.calls(action="CreateDataCache")[-1]["outcome"] == "ConnectionDropped(Success)"
    admin.clear_faults()
    retried = client.create_data_cache(create_request(client_token="uid-lost")).body.data_cache_id
    assert [cache.data_cache_id for cache in describe(client).data_caches] == [retried]


def test_faults_only_hit_the_chosen_actions(client, admin):
    active = admin.set_faults(fault_500_rate=1.0, actions=["CreateDataCache"])
    assert active["actions"] == ["CreateDataCache"]
    assert describe(client).total_count == 0
    with pytest.raises(ServerException):
        client.create_data_cache(create_request())


def test_faults_from_the_start_up_settings_are_seeded():
    def outcomes(seed: int) -> list[str]:
        config = EmulatorConfig(access_key_id="k", access_key_secret="s", seed=seed, fault_500_rate=0.5)
        with Emulator(config).in_thread() as emulator:
            client = make_client(emulator.endpoint, access_key_id="k", access_key_secret="s")
            for _ in range(16):
                try:
                    describe(client)
                except ServerException:
                    pass
            return [call["outcome"] for call in EmulatorAdmin(emulator.admin_url).calls()]

    first = outcomes(42)
    assert set(first) == {"Success", "InternalError"}
    assert outcomes(42) == first
    assert outcomes(43) != first


def test_fault_settings_are_validated(admin):
    for bad in ({"fault_500_rate": 2}, {"fault_latency_ms": -1}, {"actions": ["Nope"]}, {"surprise": 1}):
        with pytest.raises(EmulatorAdminError) as caught:
            admin.set_faults(**bad)
        assert caught.value.status == 400
