"""DescribeDataCaches paging and filters; ClientToken idempotency."""

from __future__ import annotations

import pytest
from alibabacloud_eci20180808 import models
from alibabacloud_tea_openapi.exceptions import ClientException
from emulator_support import ONE_HOUR, OTHER_REGION, REGION, create_request, describe, describe_one


def tag(key: str, value: str) -> models.CreateDataCacheRequestTag:
    return models.CreateDataCacheRequestTag(key=key, value=value)


def create_many(client, count: int, **fields) -> list[str]:
    return [
        client.create_data_cache(create_request(path=f"/models/{index}", **fields)).body.data_cache_id
        for index in range(count)
    ]


def test_paging_past_twenty(client):
    created = create_many(client, 45)
    first = describe(client)
    assert (len(first.data_caches), first.total_count) == (20, 45)
    assert first.next_token

    seen, token, pages = [], None, 0
    while True:
        page = describe(client, next_token=token, limit=20)
        seen += [cache.data_cache_id for cache in page.data_caches]
        pages += 1
        token = page.next_token
        if not token:
            break
    assert (seen, pages) == (created, 3)

    small = describe(client, limit=7)
    assert [cache.data_cache_id for cache in small.data_caches] == created[:7]


def test_paging_is_stable_when_caches_are_created_between_pages(client):
    created = create_many(client, 25)
    first = describe(client)
    created += create_many(client, 1)
    second = describe(client, next_token=first.next_token)
    assert [c.data_cache_id for c in first.data_caches + second.data_caches] == created
    assert second.next_token == ""


@pytest.mark.parametrize(
    "fields",
    [
        {"limit": 0},
        {"limit": 21},
        {"next_token": "garbage!"},
        {"data_cache_id": [f"edc-{i}" for i in range(21)]},
    ],
)
def test_describe_rejects_bad_paging_arguments(client, fields):
    with pytest.raises(ClientException) as caught:
        describe(client, **fields)
    assert (caught.value.code, caught.value.status_code) == ("InvalidParameter", 400)


def test_filters_by_ids_bucket_path_tags_and_resource_group(client):
    a = client.create_data_cache(
        create_request(
            "/a", bucket="models", tag=[tag("team", "ml"), tag("owner", "x")], resource_group_id="rg-1"
        )
    ).body.data_cache_id
    b = client.create_data_cache(
        create_request("/b", bucket="models", tag=[tag("team", "web")])
    ).body.data_cache_id
    c = client.create_data_cache(create_request("/a", tag=[tag("team", "ml")])).body.data_cache_id

    def ids(**fields):
        return [cache.data_cache_id for cache in describe(client, **fields).data_caches]

    def tags(*pairs):
        return [models.DescribeDataCachesRequestTag(key=key, value=value) for key, value in pairs]

    assert ids() == [a, b, c]  # no Bucket: every bucket
    assert ids(data_cache_id=[c, a, "edc-unknown"]) == [a, c]
    assert ids(bucket="models") == [a, b]
    assert ids(path="/a") == [a, c]
    assert ids(bucket="default", path="/a") == [c]
    assert ids(tag=tags(("team", "ml"))) == [a, c]
    assert ids(tag=tags(("team", "ml"), ("owner", "x"))) == [a]
    assert ids(tag=tags(("owner", None))) == [a]
    assert ids(resource_group_id="rg-1") == [a]
    assert describe(client, tag=tags(("team", "ml"))).total_count == 2


def test_twenty_ids_in_one_call(client):
    created = create_many(client, 22)
    body = describe(client, data_cache_id=created[:20])
    assert [cache.data_cache_id for cache in body.data_caches] == created[:20]
    assert body.total_count == 20 and body.next_token == ""


def test_same_token_same_parameters_returns_the_first_cache(client, admin):
    request = create_request(client_token="uid-1234", tag=[tag("owner", "uid-1234")])
    first = client.create_data_cache(request).body
    again = client.create_data_cache(request).body
    assert first.data_cache_id == again.data_cache_id
    assert first.request_id != again.request_id
    assert describe(client).total_count == 1
    assert admin.cache(first.data_cache_id)["ClientTokens"] == [
        {"Action": "CreateDataCache", "ClientToken": "uid-1234"}
    ]


def test_same_token_different_parameters_is_a_mismatch(client):
    client.create_data_cache(create_request(client_token="uid-1", size=20))
    with pytest.raises(ClientException) as caught:
        client.create_data_cache(create_request(client_token="uid-1", size=30))
    assert (caught.value.code, caught.value.status_code) == ("IdempotentParameterMismatch", 400)
    assert describe(client).total_count == 1


def test_tokens_are_per_region_and_per_action(client, admin):
    here = client.create_data_cache(create_request(client_token="t")).body.data_cache_id
    there = client.create_data_cache(
        create_request(client_token="t", region_id=OTHER_REGION)
    ).body.data_cache_id
    assert here != there
    admin.advance(ONE_HOUR)
    request = models.DeleteDataCacheRequest(region_id=REGION, data_cache_id=here, client_token="t")
    assert client.delete_data_cache(request).status_code == 200


def test_retried_update_delete_and_copy_answer_like_the_first_time(client, admin):
    source = client.create_data_cache(create_request()).body.data_cache_id
    admin.advance(ONE_HOUR)

    update = models.UpdateDataCacheRequest(region_id=REGION, data_cache_id=source, size=30, client_token="u1")
    client.update_data_cache(update)
    client.update_data_cache(update)  # Updating now, yet the retry is not IncorrectStatus
    admin.advance(ONE_HOUR)

    copy = models.CopyDataCacheRequest(
        region_id=REGION, data_cache_id=source, destination_region_id=OTHER_REGION, client_token="c1"
    )
    copies = {client.copy_data_cache(copy).body.data_cache_id for _ in range(3)}
    assert len(copies) == 1 and describe(client, OTHER_REGION).total_count == 1

    delete = models.DeleteDataCacheRequest(region_id=REGION, data_cache_id=source, client_token="d1")
    client.delete_data_cache(delete)
    admin.advance(ONE_HOUR)
    assert describe(client, data_cache_id=[source]).data_caches == []
    assert client.delete_data_cache(delete).status_code == 200  # the cache is gone; the retry still succeeds


def test_token_of_a_cache_deleted_out_of_band_makes_a_new_cache(client, admin):
    request = create_request(client_token="uid-drift")
    first = client.create_data_cache(request).body.data_cache_id
    admin.delete_out_of_band(first)
    assert describe_one(client, first) is None
    second = client.create_data_cache(request).body.data_cache_id
    assert second != first
    assert describe_one(client, second).status == "Creating"
