"""Signatures and the gateway's answers, through the official SDK (sync and async, V3 and V1)."""

from __future__ import annotations

import time

import pytest
from alibabacloud_eci20180808 import models
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException
from eci_datacache_emulator import Emulator, EmulatorConfig
from eci_datacache_emulator.signature import format_timestamp
from emulator_support import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    ONE_HOUR,
    REGION,
    create_request,
    describe,
    describe_one,
    make_client,
    send_raw,
)

AWKWARD_TEXT = "space + ~ * ' ( ) ! / ? & = % # 中文 😀"


@pytest.mark.parametrize("v1", [False, True], ids=["v3", "v1"])
def test_sync_client_round_trip_with_awkward_characters(emulator, admin, v1):
    client = make_client(emulator.endpoint, v1=v1)
    created = client.create_data_cache(
        create_request(
            name=AWKWARD_TEXT,
            tag=[models.CreateDataCacheRequestTag(key="team a+b", value=AWKWARD_TEXT)],
            data_source=models.CreateDataCacheRequestDataSource(
                type="URL", options={"url": "https://example.com/a b+c?x=1&y=~", "odd key!": AWKWARD_TEXT}
            ),
        )
    )
    assert created.status_code == 200
    cache = describe_one(client, created.body.data_cache_id)
    assert cache.name == AWKWARD_TEXT
    assert [(tag.key, tag.value) for tag in cache.tags] == [("team a+b", AWKWARD_TEXT)]
    assert admin.calls()[-1]["signature"] == ("V1" if v1 else "V3")


@pytest.mark.parametrize("v1", [False, True], ids=["v3", "v1"])
async def test_async_client_round_trip(async_emulator, v1):
    client = make_client(async_emulator.endpoint, v1=v1)
    created = await client.create_data_cache_async(
        create_request(name=AWKWARD_TEXT, tag=[models.CreateDataCacheRequestTag(key="k", value=AWKWARD_TEXT)])
    )
    listed = await client.describe_data_caches_async(
        models.DescribeDataCachesRequest(
            region_id=REGION, tag=[models.DescribeDataCachesRequestTag(key="k", value=AWKWARD_TEXT)]
        )
    )
    assert [cache.data_cache_id for cache in listed.body.data_caches] == [created.body.data_cache_id]
    assert listed.body.data_caches[0].name == AWKWARD_TEXT


@pytest.mark.parametrize("v1", [False, True], ids=["v3", "v1"])
def test_wrong_secret_is_signature_does_not_match(emulator, v1):
    client = make_client(emulator.endpoint, access_key_secret="not-the-secret", v1=v1)
    with pytest.raises(ClientException) as caught:
        describe(client)
    assert (caught.value.code, caught.value.status_code) == ("SignatureDoesNotMatch", 400)
    assert set(caught.value.data) >= {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert caught.value.request_id == caught.value.data["RequestId"]


@pytest.mark.parametrize("v1", [False, True], ids=["v3", "v1"])
def test_unknown_access_key_is_not_found(emulator, v1):
    client = make_client(emulator.endpoint, access_key_id="nobody", v1=v1)
    with pytest.raises(ClientException) as caught:
        describe(client)
    assert (caught.value.code, caught.value.status_code) == ("InvalidAccessKeyId.NotFound", 404)


async def test_async_client_gets_the_same_errors(async_emulator):
    client = make_client(async_emulator.endpoint, access_key_secret="wrong")
    with pytest.raises(ClientException) as caught:
        await client.describe_data_caches_async(models.DescribeDataCachesRequest(region_id=REGION))
    assert caught.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("v1", [False, True], ids=["v3", "v1"])
def test_sts_credentials_need_their_token(v1):
    config = EmulatorConfig(
        access_key_id="STS.key", access_key_secret="sts-secret", security_token="the-token"
    )
    with Emulator(config).in_thread() as emulator:

        def client(token):
            return make_client(
                emulator.endpoint,
                access_key_id="STS.key",
                access_key_secret="sts-secret",
                security_token=token,
                v1=v1,
            )

        assert describe(client("the-token")).total_count == 0
        with pytest.raises(ClientException) as wrong:
            describe(client("another-token"))
        assert wrong.value.code == "InvalidSecurityToken.MismatchWithAccessKey"
        with pytest.raises(ClientException) as missing:
            describe(client(None))
        assert missing.value.code == "InvalidSecurityToken.Malformed"


def test_token_with_a_permanent_key_is_rejected(emulator):
    client = make_client(emulator.endpoint, security_token="unexpected")
    with pytest.raises(ClientException) as caught:
        describe(client)
    assert caught.value.code == "InvalidSecurityToken.MismatchWithAccessKey"


def test_unsigned_request_is_incomplete_signature(emulator):
    response = send_raw(emulator.endpoint, "DescribeDataCaches", {"RegionId": REGION}, sign=False)
    assert response.status_code == 400
    assert response.json()["Code"] == "IncompleteSignature"


def test_stale_timestamp_is_expired(emulator):
    stale = format_timestamp(time.time() - 3600)
    response = send_raw(emulator.endpoint, "DescribeDataCaches", {"RegionId": REGION}, date=stale)
    assert (response.status_code, response.json()["Code"]) == (400, "InvalidTimeStamp.Expired")


def test_reused_nonce_is_refused(emulator):
    first = send_raw(emulator.endpoint, "DescribeDataCaches", {"RegionId": REGION}, nonce="fixed-nonce")
    again = send_raw(emulator.endpoint, "DescribeDataCaches", {"RegionId": REGION}, nonce="fixed-nonce")
    assert first.status_code == 200
    assert (again.status_code, again.json()["Code"]) == (400, "SignatureNonceUsed")


def test_unknown_action_and_missing_action(emulator):
    unknown = send_raw(emulator.endpoint, "DescribeEverything", {"RegionId": REGION})
    assert (unknown.status_code, unknown.json()["Code"]) == (404, "InvalidAction.NotFound")
    missing = send_raw(emulator.endpoint, None, {"RegionId": REGION})
    assert (missing.status_code, missing.json()["Code"]) == (400, "MissingParameter")


def test_every_answer_is_json_even_for_unknown_paths(emulator):
    for path in ("/nowhere", "/_emulator/nowhere"):
        response = send_raw(emulator.endpoint, "DescribeDataCaches", {}, path=path)
        assert response.status_code == 404
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["Code"] == "NotFound"


def test_missing_region_is_missing_parameter(client):
    with pytest.raises(ClientException) as caught:
        client.describe_data_caches(models.DescribeDataCachesRequest())
    assert (caught.value.code, caught.value.status_code) == ("MissingParameter", 400)
    assert '"RegionId"' in caught.value.message


def test_length_prefixed_option_keys_are_plain_keys(client, admin):
    created = client.create_data_cache(
        create_request(
            data_source=models.CreateDataCacheRequestDataSource(
                type="OSS",
                options={"#6#bucket": "my-bucket", "#4#path": "/data", "#10#url": "oss.example.com"},
            )
        )
    )
    admin.advance(ONE_HOUR)
    cache = describe_one(client, created.body.data_cache_id)
    assert cache.status == "Available"
    assert cache.data_source.options == '{"bucket": "my-bucket", "path": "/data", "url": "oss.example.com"}'


def test_default_credentials_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret")
    config = EmulatorConfig()
    assert (config.access_key_id, config.access_key_secret) == ("env-key", "env-secret")
    assert "env-secret" not in repr(config)
    assert ACCESS_KEY_SECRET not in repr(
        EmulatorConfig(access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET)
    )


def test_published_v3_form_with_encoded_keys_is_accepted_too(emulator):
    params = {"RegionId": REGION, "Path": "/p", "DataSource.Type": "URL", "DataSource.Options.odd key": "v"}
    for encode_keys in (False, True):
        params["Path"] = f"/p{int(encode_keys)}"
        response = send_raw(emulator.endpoint, "CreateDataCache", params, encode_keys=encode_keys)
        assert response.status_code == 200, response.json()


async def test_unexpected_errors_answer_json_without_details(async_emulator, monkeypatch):
    def explode(action, params):
        raise RuntimeError("boom with hf_SECRET inside")

    monkeypatch.setattr(async_emulator.service, "call", explode)
    client = make_client(async_emulator.endpoint)
    with pytest.raises(ServerException) as caught:
        await client.describe_data_caches_async(models.DescribeDataCachesRequest(region_id=REGION))
    assert (caught.value.code, caught.value.status_code) == ("InternalError", 500)
    assert "SECRET" not in str(caught.value.data)
