"""ObservedCache parsing (tolerant) and request models (no secrets in repr)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alibabacloud_eci20180808 import models as eci

from datacache_operator.cloud.models import (
    CreateRequest,
    DataSource,
    ObservedCache,
    UpdateRequest,
    parse_options,
    parse_time,
    redacted_options,
)

DOC_EXAMPLE = {
    "DataCacheId": "edc-bp15l4vvys94oo******",
    "RegionId": "cn-hangzhou",
    "Name": "test",
    "Bucket": "default",
    "Path": "/model/test",
    "Size": 20,
    "Status": "Available",
    "Progress": "100%",
    "CreationTime": "2023-06-16T02:43Z",
    "ExpireDateTime": "2023-06-26T02:43Z",
    "ResourceGroupId": "rg-2df3isufhi38****",
    "SnapshotId": "s-2ze2ehcpqr2iwh******",
    "DataSource": {
        "Type": "NAS",
        "Options": '{"options":{"path":"/","server":"x.nas.aliyuncs.com","vers":"3","options":"nolock"},"type":"NAS"}',
    },
    "Tags": [{"Key": "owner-uid", "Value": "1234"}, {"Key": "env", "Value": "dev"}],
    "Events": [
        {
            "Type": "Normal",
            "Reason": "Started",
            "Message": "started",
            "LastTimestamp": "2021-06-16T02:24:48Z",
        },
        {"Type": "Normal", "Reason": "Done", "Message": "Successfully check data cache resource."},
        {"Type": "Normal", "Reason": "Pulled", "Message": "pulled", "LastTimestamp": "2021-06-16T02:30:00Z"},
    ],
}


def test_documented_example() -> None:
    cache = ObservedCache.from_api(DOC_EXAMPLE, "ignored-region")
    assert cache.data_cache_id == "edc-bp15l4vvys94oo******"
    assert cache.region == "cn-hangzhou"
    assert (cache.bucket, cache.path, cache.size, cache.status) == ("default", "/model/test", 20, "Available")
    assert cache.progress_percent == 100
    assert cache.creation_time == datetime(2023, 6, 16, 2, 43, tzinfo=UTC)
    assert cache.retention_days is None  # DescribeDataCaches has no RetentionDays field
    assert cache.retention_days_estimate == 10
    assert cache.data_source_type == "NAS"
    assert cache.data_source_options == {
        "path": "/",
        "server": "x.nas.aliyuncs.com",
        "vers": "3",
        "options": "nolock",
    }
    assert cache.tags == {"owner-uid": "1234", "env": "dev"}
    assert cache.last_event_message == "pulled"  # newest by timestamp, not last in the list


def test_sdk_model_round_trip() -> None:
    """The client feeds ``to_map()`` of the SDK's response model."""
    item = eci.DescribeDataCachesResponseBodyDataCaches().from_map(DOC_EXAMPLE)
    assert ObservedCache.from_api(item.to_map(), "cn-hangzhou") == ObservedCache.from_api(DOC_EXAMPLE, "x")


def test_garbage_fields_become_none_not_errors() -> None:
    cache = ObservedCache.from_api(
        {
            "DataCacheId": "edc-1",
            "Size": "twenty",
            "CreationTime": "yesterday",
            "ExpireDateTime": None,
            "DataSource": "not an object",
            "Tags": None,
            "Events": [None, "x"],
            "Progress": "n/a",
        },
        "cn-hangzhou",
    )
    assert cache.region == "cn-hangzhou"
    assert (cache.size, cache.creation_time, cache.retention_days, cache.progress_percent) == (
        None,
        None,
        None,
        None,
    )
    assert cache.data_source_options == {} and cache.tags == {} and cache.events == ()
    assert cache.last_event_message is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023-06-16T02:43Z", datetime(2023, 6, 16, 2, 43, tzinfo=UTC)),
        ("2021-06-16T02:24:48Z", datetime(2021, 6, 16, 2, 24, 48, tzinfo=UTC)),
        ("2021-06-16T10:24:48+08:00", datetime(2021, 6, 16, 2, 24, 48, tzinfo=UTC)),
        ("2021-06-16T02:24:48.123Z", datetime(2021, 6, 16, 2, 24, 48, 123000, tzinfo=UTC)),
        ("2021-06-16 02:24:48", datetime(2021, 6, 16, 2, 24, 48, tzinfo=UTC)),
        (1623810288, datetime(2021, 6, 16, 2, 24, 48, tzinfo=UTC)),
        (1623810288000, datetime(2021, 6, 16, 2, 24, 48, tzinfo=UTC)),
        ("", None),
        ("soon", None),
        (None, None),
    ],
)
def test_parse_time(value: object, expected: datetime | None) -> None:
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"repoId": "a/b", "revision": "main"}', {"repoId": "a/b", "revision": "main"}),
        ({"repoId": "a/b"}, {"repoId": "a/b"}),
        ({"options": {"url": "u"}, "type": "URL"}, {"url": "u"}),
        ({"options": "nolock", "server": "s"}, {"options": "nolock", "server": "s"}),  # NAS key "options"
        ('{"n": 3, "flag": true}', {"n": "3", "flag": "true"}),
        ("{not json", {}),
        (None, {}),
        ("[1, 2]", {}),
    ],
)
def test_parse_options(value: object, expected: dict[str, str]) -> None:
    assert parse_options(value) == expected


def test_secret_options_are_hidden_from_repr_and_str() -> None:
    token = "hf_secret_value_123"
    source = DataSource(type="URL", options={"repoId": "org/model", "accessToken": token})
    request = CreateRequest(path="/m", data_source=source)
    update = UpdateRequest(data_source=source)
    cache = ObservedCache(
        data_cache_id="edc-1", region="r", data_source_options={"akSecret": token, "url": "u"}
    )
    for shown in (repr(source), str(source), repr(request), str(update), repr(cache), str(cache)):
        assert token not in shown
    assert "org/model" in repr(source)  # non-secret values stay visible
    assert source.options["accessToken"] == token  # ... and the value is still there for the call
    assert redacted_options({"akId": "LTAI", "AccessKeySecret": "x", "bucket": "b", "password": "p"}) == {
        "akId": "***",
        "AccessKeySecret": "***",
        "bucket": "b",
        "password": "***",
    }


def test_update_request_is_empty() -> None:
    assert UpdateRequest().is_empty
    assert not UpdateRequest(retention_days=3).is_empty


def test_ecis_build_messages_lose_the_credentials_of_the_urls_they_quote() -> None:
    event = {
        "Message": "pull https://bob:s3cret@hf.example/x?token=abc failed; token=hf_xyz",
        "LastTimestamp": "2026-01-01T00:00:00Z",
    }
    cache = ObservedCache.from_api({"DataCacheId": "edc-1", "Events": [event]}, "cn-hangzhou")
    message = cache.last_event_message or ""
    assert "https://***@hf.example/x" in message
    assert not {"s3cret", "bob", "abc", "hf_xyz"} & set(message.replace("?", " ").replace(";", " ").split())
    assert "s3cret" not in message and "hf_xyz" not in message
