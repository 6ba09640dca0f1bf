"""Create, load, fail, update, delete, copy and expire, driven through the official SDK."""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time

import pytest
from alibabacloud_eci20180808 import models
from alibabacloud_tea_openapi.exceptions import ClientException
from emulator_support import (
    ONE_HOUR,
    OTHER_REGION,
    REGION,
    create_request,
    describe,
    describe_one,
    make_client,
)

DAY = 86_400


def url_source(url: str) -> models.CreateDataCacheRequestDataSource:
    return models.CreateDataCacheRequestDataSource(type="URL", options={"url": url})


def create(client, **fields) -> str:
    return client.create_data_cache(create_request(**fields)).body.data_cache_id


def update(client, data_cache_id: str, region: str = REGION, **fields):
    request = models.UpdateDataCacheRequest(region_id=region, data_cache_id=data_cache_id, **fields)
    return client.update_data_cache(request)


def delete(client, region: str = REGION, **fields):
    return client.delete_data_cache(models.DeleteDataCacheRequest(region_id=region, **fields))


def copy(client, data_cache_id: str, destination: str = OTHER_REGION, **fields) -> str:
    request = models.CopyDataCacheRequest(
        region_id=REGION, data_cache_id=data_cache_id, destination_region_id=destination, **fields
    )
    return client.copy_data_cache(request).body.data_cache_id


def error_of(call, *args, **kwargs) -> ClientException:
    with pytest.raises(ClientException) as caught:
        call(*args, **kwargs)
    return caught.value


def test_create_goes_creating_loading_available(client, admin):
    data_cache_id = create(
        client,
        name="qwen",
        bucket="models",
        size=30,
        retention_days=7,
        resource_group_id="rg-test",
        security_group_id="sg-test",
        v_switch_id="vsw-test",
        eip_create_param=models.CreateDataCacheRequestEipCreateParam(bandwidth=10, isp="BGP_PRO"),
        data_source=models.CreateDataCacheRequestDataSource(
            type="URL",
            options={"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2", "accessToken": "hf_xyz"},
        ),
        tag=[models.CreateDataCacheRequestTag(key="owner", value="uid-1")],
    )
    assert re.fullmatch(r"edc-[a-z0-9]{20}", data_cache_id)
    creating = describe_one(client, data_cache_id)
    assert (creating.status, creating.progress) == ("Creating", "0%")

    admin.advance(35 * 0.02)  # past Creating (30 s scaled), into Loading
    assert describe_one(client, data_cache_id).status == "Loading"

    admin.advance(ONE_HOUR)
    cache = describe_one(client, data_cache_id)
    assert (cache.status, cache.progress, cache.size, cache.bucket, cache.name) == (
        "Available",
        "100%",
        30,
        "models",
        "qwen",
    )
    assert cache.region_id == REGION and cache.resource_group_id == "rg-test"
    assert cache.snapshot_id.startswith("s-") and cache.container_group_id.startswith("eci-")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", cache.creation_time)
    assert cache.expire_date_time > cache.creation_time
    assert json.loads(cache.data_source.options) == {
        "repoSource": "HuggingFace/Model",
        "repoId": "Qwen/Qwen2",
        "accessToken": "******",
    }
    assert [event.reason for event in cache.events] == ["Started", "Pulling", "Completed"]
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event.first_timestamp) for event in cache.events
    )
    network = admin.cache(data_cache_id)["Network"]
    assert network["EipCreateParam"] == {"Bandwidth": 10, "ISP": "BGP_PRO"}
    assert network["VSwitchId"] == "vsw-test"


async def test_default_time_scale_makes_a_cache_available_within_seconds(async_emulator):
    client = make_client(async_emulator.endpoint)
    created = await client.create_data_cache_async(create_request())
    request = models.DescribeDataCachesRequest(region_id=REGION, data_cache_id=[created.body.data_cache_id])
    deadline = time.monotonic() + 5.0
    statuses = []
    while time.monotonic() < deadline:
        status = (await client.describe_data_caches_async(request)).body.data_caches[0].status
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        if status == "Available":
            break
        await asyncio.sleep(0.1)
    assert statuses == ["Creating", "Loading", "Available"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (url_source("https://example.com/fail.tar"), "the source returned an error"),
        (url_source("https://models.example.invalid/x"), "network is unreachable"),
        (
            models.CreateDataCacheRequestDataSource(type="NAS", options={"path": "/share"}),
            "needs the option server",
        ),
        (None, "No data source"),
    ],
)
def test_sources_that_cannot_be_fetched_fail_with_a_readable_event(client, admin, source, message):
    data_cache_id = client.create_data_cache(
        models.CreateDataCacheRequest(region_id=REGION, path="/x", data_source=source)
    ).body.data_cache_id
    admin.advance(ONE_HOUR)
    cache = describe_one(client, data_cache_id)
    assert cache.status == "Failed"
    assert cache.events[-1].type == "Warning"
    assert message in cache.events[-1].message


def test_data_larger_than_size_fails_and_bigger_size_fits(client, admin):
    too_small = create(client, size=20, data_source=url_source("https://example.com/llama-30gib.tar"))
    big_enough = create(client, size=40, data_source=url_source("https://example.com/llama-30gib.tar"))
    admin.advance(ONE_HOUR)
    failed = describe_one(client, too_small)
    assert (failed.status, failed.progress) == ("Failed", "66%")
    assert "(30 GiB) is larger than the cache size (20 GiB)" in failed.events[-1].message
    assert describe_one(client, big_enough).status == "Available"


def test_create_validation(client):
    cases = [
        (dict(bucket="eci-system"), "InvalidParameter", "Bucket"),
        (dict(size=10), "InvalidParameter", "Size"),
        (dict(size=70000), "InvalidParameter", "Size"),
        (dict(retention_days=0), "InvalidParameter", "RetentionDays"),
        (dict(client_token="x" * 65), "InvalidParameter", "ClientToken"),
        (dict(client_token="jeton-é"), "InvalidParameter", "ClientToken"),
        (dict(path="relative/path"), "InvalidParameter", "Path"),
        (dict(data_source=models.CreateDataCacheRequestDataSource(type="FTP")), "InvalidParameter", "DataSource.Type"),
        (dict(eip_instance_id="eip-1", eip_create_param=models.CreateDataCacheRequestEipCreateParam(bandwidth=5)),
         "InvalidParameter", "EipCreateParam"),
        (dict(tag=[models.CreateDataCacheRequestTag(key=f"k{i}", value="v") for i in range(21)]),
         "InvalidParameter", "Tag"),
        (dict(tag=[models.CreateDataCacheRequestTag(key="aliyun:x", value="v")]), "InvalidParameter", "Tag.1.Key"),
        (dict(region_id="Not A Region"), "InvalidRegionId", "region"),
    ]  # fmt: skip
    for fields, code, mentioned in cases:
        error = error_of(client.create_data_cache, create_request(**fields))
        assert (error.code, error.status_code) == (code, 400), fields
        assert mentioned in error.message, fields
    missing_path = error_of(client.create_data_cache, models.CreateDataCacheRequest(region_id=REGION))
    assert (missing_path.code, '"Path"' in missing_path.message) == ("MissingParameter", True)
    assert describe(client).total_count == 0


def test_update_rebuilds_on_size_change_and_only_from_available(client, admin):
    data_cache_id = create(client)
    busy = error_of(update, client, data_cache_id, size=40)
    assert (busy.code, busy.status_code) == ("IncorrectStatus", 400)

    admin.advance(ONE_HOUR)
    update(
        client,
        data_cache_id,
        size=40,
        name="renamed",
        tag=[models.UpdateDataCacheRequestTag(key="a", value="b")],
    )
    cache = describe_one(client, data_cache_id)
    assert (cache.status, cache.size, cache.name) == ("Updating", 40, "renamed")
    assert [(tag.key, tag.value) for tag in cache.tags] == [("a", "b")]

    admin.advance(ONE_HOUR)
    assert describe_one(client, data_cache_id).status == "Available"


def test_retention_only_update_renews_without_rebuild(client, admin):
    data_cache_id = create(client, retention_days=1)
    admin.advance(ONE_HOUR)
    before = describe_one(client, data_cache_id).expire_date_time
    admin.advance(DAY / 2)
    update(client, data_cache_id, retention_days=1)
    cache = describe_one(client, data_cache_id)
    assert cache.status == "Available"
    assert cache.expire_date_time > before
    admin.advance(DAY * 0.75)  # past the original expiry, before the renewed one
    assert describe_one(client, data_cache_id) is not None


def test_update_to_a_too_big_source_fails_then_succeeds_with_more_size(client, admin):
    data_cache_id = create(client)
    admin.advance(ONE_HOUR)
    bigger = models.UpdateDataCacheRequestDataSource(
        type="URL", options={"url": "https://example.com/m-50gb.bin"}
    )
    update(client, data_cache_id, data_source=bigger)
    assert describe_one(client, data_cache_id).status == "Updating"
    admin.advance(ONE_HOUR)
    failed = describe_one(client, data_cache_id)
    assert failed.status == "UpdateFailed"
    assert "(50 GiB) is larger than the cache size (20 GiB)" in failed.events[-1].message

    update(client, data_cache_id, size=60)
    admin.advance(ONE_HOUR)
    assert describe_one(client, data_cache_id).status == "Available"


def test_update_cannot_move_a_cache_to_another_bucket(client, admin):
    data_cache_id = create(client)
    admin.advance(ONE_HOUR)
    error = error_of(update, client, data_cache_id, bucket="elsewhere")
    assert (error.code, "Bucket" in error.message) == ("InvalidParameter", True)


def test_unknown_ids_are_data_cache_not_found(client):
    for call in (
        lambda: update(client, "edc-doesnotexist", size=30),
        lambda: delete(client, data_cache_id="edc-doesnotexist"),
        lambda: copy(client, "edc-doesnotexist"),
    ):
        error = error_of(call)
        assert (error.code, error.status_code) == ("DataCache.NotFound", 404)
    assert describe(client, data_cache_id=["edc-doesnotexist"]).data_caches == []


def test_delete_goes_through_deleting_then_the_cache_is_gone(client, admin):
    data_cache_id = create(client)
    busy = error_of(delete, client, data_cache_id=data_cache_id)
    assert busy.code == "IncorrectStatus"
    admin.advance(ONE_HOUR)

    assert delete(client, data_cache_id=data_cache_id).status_code == 200
    assert describe_one(client, data_cache_id).status == "Deleting"
    delete(client, data_cache_id=data_cache_id)  # again while Deleting: accepted, nothing changes
    admin.advance(ONE_HOUR)
    assert describe(client, data_cache_id=[data_cache_id]).data_caches == []
    assert admin.state()["removed"][-1]["Reason"] == "deleted"


def test_failed_cache_can_be_deleted_by_bucket_and_path(client, admin):
    create(client, path="/models/broken", data_source=url_source("https://example.com/fail"))
    keep = create(client, path="/models/fine")
    admin.advance(ONE_HOUR)
    delete(client, bucket="default", path="/models/broken")
    admin.advance(ONE_HOUR)
    assert [cache.data_cache_id for cache in describe(client).data_caches] == [keep]
    error = error_of(delete, client, path="/models/none")
    assert error.code == "DataCache.NotFound"


def test_copy_needs_an_available_source_and_lands_in_the_destination(client, admin):
    source = create(client, name="source", bucket="models", retention_days=3)
    early = error_of(copy, client, source)
    assert (early.code, early.status_code) == ("IncorrectStatus", 400)
    admin.advance(ONE_HOUR)

    copied = copy(
        client,
        source,
        bucket="replicas",
        path="/models/qwen-copy",
        name="the copy",
        retention_days=9,
        tag=[models.CopyDataCacheRequestTag(key="replica-of", value=source)],
    )
    assert copied != source and copied.startswith("edc-")
    assert describe(client, OTHER_REGION, data_cache_id=[source]).data_caches == []
    assert describe_one(client, copied, OTHER_REGION).status == "Creating"
    admin.advance(ONE_HOUR)
    cache = describe_one(client, copied, OTHER_REGION)
    assert (cache.status, cache.region_id, cache.bucket, cache.path, cache.name) == (
        "Available",
        OTHER_REGION,
        "replicas",
        "/models/qwen-copy",
        "the copy",
    )
    assert [(tag.key, tag.value) for tag in cache.tags] == [("replica-of", source)]
    assert cache.expire_date_time != describe_one(client, source).expire_date_time
    assert admin.cache(copied)["CopiedFrom"] == {"DataCacheId": source, "RegionId": REGION}


def test_copy_parameter_checks(client, admin):
    source = create(client)
    admin.advance(ONE_HOUR)
    same_region = error_of(copy, client, source, destination=REGION)
    assert same_region.code == "InvalidParameter"
    no_destination = error_of(
        client.copy_data_cache, models.CopyDataCacheRequest(region_id=REGION, data_cache_id=source)
    )
    assert no_destination.code == "MissingParameter"


def test_copy_defaults_to_the_source_address(client, admin):
    source = create(client, bucket="models", path="/m/a", name="a")
    admin.advance(ONE_HOUR)
    copied = copy(client, source, destination="ap-southeast-1")
    cache = describe_one(client, copied, "ap-southeast-1")
    assert (cache.bucket, cache.path, cache.name, cache.expire_date_time) == ("models", "/m/a", "a", None)


def test_caches_expire_after_their_retention(client, admin):
    short = create(client, retention_days=1)
    forever = create(client)
    admin.advance(DAY - 60)
    assert describe_one(client, short).status == "Available"
    admin.advance(120)
    assert [cache.data_cache_id for cache in describe(client).data_caches] == [forever]
    assert admin.state()["removed"][-1] == {
        **admin.state()["removed"][-1],
        "DataCacheId": short,
        "Reason": "expired",
    }


def test_regions_are_separate(client):
    in_hangzhou = create(client)
    in_beijing = create(client, region_id=OTHER_REGION)
    assert [cache.data_cache_id for cache in describe(client).data_caches] == [in_hangzhou]
    assert [cache.data_cache_id for cache in describe(client, OTHER_REGION).data_caches] == [in_beijing]


def test_date_header_follows_the_virtual_clock(client, admin):
    # The operator judges expiry by the cloud's clock, which it reads from this header.
    admin.advance(10 * DAY)
    headers = client.describe_data_caches(models.DescribeDataCachesRequest(region_id=REGION)).headers
    server_time = email.utils.parsedate_to_datetime(headers["date"]).timestamp()
    assert abs(server_time - (time.time() + admin.clock()["offsetSeconds"])) < 60
