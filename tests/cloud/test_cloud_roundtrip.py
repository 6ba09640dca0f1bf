"""Create, describe, update, copy and delete through the real SDK against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

from eci_datacache_emulator.admin_client import EmulatorAdmin

from datacache_operator.cloud import (
    CopyRequest,
    CreateRequest,
    DataSource,
    EciClient,
    EciError,
    EipCreateParam,
    NetConfig,
    ObservedCache,
    UpdateRequest,
)

REGION = "cn-hangzhou"
COPY_REGION = "cn-beijing"
HF_TOKEN = "hf_roundTripSecretToken42"
OWNER_TAG = "eci.datacache.dev/owner-uid"

# Long enough for any phase (create 120 s, copy 80 s, update 60 s, delete 10 s of cloud time).
CLOUD_PHASE = 300


def qwen_request(path: str = "/models/qwen", **changes: Any) -> CreateRequest:
    fields: dict[str, Any] = {
        "bucket": "default",
        "path": path,
        "name": "qwen",
        "size": 20,
        "retention_days": 7,
        "data_source": DataSource(
            type="URL",
            options={"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2-0.5B", "accessToken": HF_TOKEN},
        ),
        "net_config": NetConfig(
            security_group_id="sg-test", v_switch_id="vsw-test", eip_create_param=EipCreateParam(bandwidth=5)
        ),
        "tags": {OWNER_TAG: "uid-1", "env": "dev é/ü"},
    }
    return CreateRequest(**{**fields, **changes})


async def available(
    eci: EciClient, admin: EmulatorAdmin, eventually: Any, region: str, cache_id: str
) -> ObservedCache:
    return await eventually(
        lambda: eci.describe(region, cache_id),
        lambda cache: cache is not None and cache.status == "Available",
        advance=lambda: admin.advance(CLOUD_PHASE),
    )


async def test_round_trip(eci: EciClient, admin: EmulatorAdmin, eventually: Any) -> None:
    cache_id = await eci.create(REGION, qwen_request(), client_token="uid-1-create")
    assert cache_id.startswith("edc-")
    # The same ClientToken and request: the same cache, never a second one.
    assert await eci.create(REGION, qwen_request(), client_token="uid-1-create") == cache_id
    assert len(admin.caches(REGION)) == 1

    observed = await eci.describe(REGION, cache_id)
    assert observed is not None
    assert observed.status in ("Creating", "Loading")
    assert (observed.bucket, observed.path, observed.name, observed.size) == (
        "default",
        "/models/qwen",
        "qwen",
        20,
    )
    assert observed.tags == {OWNER_TAG: "uid-1", "env": "dev é/ü"}
    assert observed.data_source_type == "URL"
    assert observed.data_source_options["repoId"] == "Qwen/Qwen2-0.5B"
    assert HF_TOKEN not in repr(observed)

    # Busy caches refuse updates: retryable.
    try:
        await eci.update(REGION, cache_id, UpdateRequest(retention_days=3))
    except EciError as error:
        assert error.code == "IncorrectStatus" and error.retryable and error.is_busy
    else:
        raise AssertionError("an update of a loading cache should be refused")

    ready = await available(eci, admin, eventually, REGION, cache_id)
    assert ready.creation_time is not None and ready.expire_time is not None
    assert ready.retention_days_estimate == 7
    assert ready.last_event_message

    await eci.update(REGION, cache_id, UpdateRequest(retention_days=3, name="qwen-small"))
    updated = await eci.describe(REGION, cache_id)
    assert updated is not None and updated.name == "qwen-small"
    # The emulator counts a new retention from the update: an estimate from creation differs
    # in general, here less than a day has passed.
    assert updated.retention_days_estimate == 3

    copy_id = await eci.copy(
        REGION,
        cache_id,
        CopyRequest(
            destination_region=COPY_REGION, name="qwen-copy", retention_days=2, tags={OWNER_TAG: "uid-2"}
        ),
        client_token="uid-2-copy",
    )
    assert copy_id != cache_id
    assert await eci.describe(REGION, copy_id) is None  # it lives in the destination region
    copied = await available(eci, admin, eventually, COPY_REGION, copy_id)
    assert (copied.region, copied.name, copied.path, copied.tags) == (
        COPY_REGION,
        "qwen-copy",
        "/models/qwen",
        {OWNER_TAG: "uid-2"},
    )

    assert await eci.delete(REGION, cache_id) is True
    await eventually(
        lambda: eci.describe(REGION, cache_id),
        lambda cache: cache is None,
        advance=lambda: admin.advance(CLOUD_PHASE),
    )
    # Already gone counts as success (the emulator answers 404 DataCache.NotFound).
    assert await eci.delete(REGION, cache_id) is False
    assert await eci.delete(REGION, "edc-neverexisted0000") is False
    assert [c["DataCacheId"] for c in admin.caches()] == [copy_id]


async def test_find_by_tags_recovers_a_lost_id(eci: EciClient, admin: EmulatorAdmin) -> None:
    mine = [
        await eci.create(REGION, qwen_request(f"/m/{n}", tags={OWNER_TAG: "uid-a"}), client_token=f"a-{n}")
        for n in range(23)
    ]
    await eci.create(REGION, qwen_request("/m/other", tags={OWNER_TAG: "uid-b"}), client_token="b")
    await eci.create(COPY_REGION, qwen_request("/m/elsewhere", tags={OWNER_TAG: "uid-a"}), client_token="c")
    calls_before = len(admin.calls(action="DescribeDataCaches"))

    found = await eci.find_by_tags(REGION, {OWNER_TAG: "uid-a"})

    assert sorted(c.data_cache_id for c in found) == sorted(mine)
    assert all(c.region == REGION and c.tags[OWNER_TAG] == "uid-a" for c in found)
    assert len(admin.calls(action="DescribeDataCaches")) - calls_before == 2  # 20 + 3, NextToken followed
    assert await eci.find_by_tags(REGION, {OWNER_TAG: "uid-nobody"}) == []


async def test_find_at_lists_what_is_at_one_bucket_and_path(eci: EciClient, admin: EmulatorAdmin) -> None:
    here = await eci.create(REGION, qwen_request("/m/here", bucket="team-a"), client_token="here")
    await eci.create(REGION, qwen_request("/m/here", bucket="team-b"), client_token="other-bucket")
    await eci.create(REGION, qwen_request("/m/here/deeper", bucket="team-a"), client_token="other-path")
    await eci.create(COPY_REGION, qwen_request("/m/here", bucket="team-a"), client_token="other-region")
    calls_before = len(admin.calls(action="DescribeDataCaches"))

    assert [c.data_cache_id for c in await eci.find_at(REGION, "team-a", "/m/here")] == [here]
    assert await eci.find_at(REGION, "team-a", "/m/nothing") == []
    sent = admin.calls(action="DescribeDataCaches")[calls_before]["params"]
    assert (sent["Bucket"], sent["Path"]) == ("team-a", "/m/here") and not any(
        k.startswith("Tag") for k in sent
    )


async def test_describe_reports_gone_ids(eci: EciClient, admin: EmulatorAdmin) -> None:
    kept = await eci.create(REGION, qwen_request("/m/kept"), client_token="kept")
    vanished = await eci.create(REGION, qwen_request("/m/vanished"), client_token="vanished")
    admin.delete_out_of_band(vanished)
    found, gone = await asyncio.gather(eci.describe(REGION, kept), eci.describe(REGION, vanished))
    assert found is not None and gone is None


async def test_update_of_an_unknown_id_is_a_terminal_not_found(eci: EciClient, admin: EmulatorAdmin) -> None:
    try:
        await eci.update(REGION, "edc-neverexisted0000", UpdateRequest(name="x"))
    except EciError as error:
        assert error.is_not_found and not error.retryable and error.http_status == 404
    else:
        raise AssertionError("updating an unknown cache should fail")
