"""Pure pieces checked against the SDK's own signing code, and the documented failure rules."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from alibabacloud_tea_openapi.utils import Utils
from eci_datacache_emulator.errors import ApiError
from eci_datacache_emulator.faults import RateLimiter
from eci_datacache_emulator.outcomes import assess_source, size_failure
from eci_datacache_emulator.signature import (
    sha256_hex,
    v1_signature,
    v1_string_to_sign,
    v3_signature,
    v3_string_to_sign,
)
from eci_datacache_emulator.wire import (
    Parameters,
    is_secret_option,
    redact_parameters,
    strip_length_prefix,
)

PARAMS = {"RegionId": "cn-hangzhou", "Name": "a b+c~*中", "DataSource.Options.odd key": "x/y?z", "Empty": ""}


def test_v3_matches_the_sdk():
    headers = {"host": "127.0.0.1:1", "x-acs-action": "CreateDataCache", "x-acs-date": "2026-01-01T00:00:00Z"}
    request = SimpleNamespace(pathname="/", method="POST", query=PARAMS, headers=headers)
    expected = Utils.get_authorization(request, "ACS3-HMAC-SHA256", sha256_hex(b""), "AK", "SK")
    string_to_sign = v3_string_to_sign(
        method="POST",
        path="/",
        params=PARAMS,
        headers={name: [value] for name, value in headers.items()},
        signed_headers=sorted(headers),
        hashed_payload=sha256_hex(b""),
    )
    assert expected.endswith(f"Signature={v3_signature('SK', string_to_sign)}")


def test_v1_matches_the_sdk():
    params = {**PARAMS, "Action": "DescribeDataCaches", "SignatureMethod": "HMAC-SHA1"}
    assert v1_signature("SK", v1_string_to_sign("POST", params)) == Utils.get_rpcsignature(
        params, "POST", "SK"
    )


@pytest.mark.parametrize(
    ("key", "plain"),
    [("#10#repoSource", "repoSource"), ("#3#url", "url"), ("#10#url", "url"), ("url", "url")],
)
def test_length_prefix(key, plain):
    assert strip_length_prefix(key) == plain


@pytest.mark.parametrize(
    "key", ["accessToken", "akId", "akSecret", "password", "#5#token", "api_key", "AccessKey"]
)
def test_secret_option_keys(key):
    assert is_secret_option(key)


@pytest.mark.parametrize(
    "key", ["url", "repoId", "repoSource", "bucket", "path", "server", "ramRole", "revision"]
)
def test_plain_option_keys(key):
    assert not is_secret_option(key)


def test_redact_parameters():
    redacted = redact_parameters(
        {
            "Signature": "s",
            "AccessKeyId": "a",
            "SecurityToken": "t",
            "DataSource.Options.accessToken": "x",
            "Path": "/p",
        }
    )
    assert redacted == {
        "Signature": "******",
        "AccessKeyId": "******",
        "SecurityToken": "******",
        "DataSource.Options.accessToken": "******",
        "Path": "/p",
    }


def test_flattened_parameters():
    params = Parameters(
        {
            "Tag.2.Key": "b",
            "Tag.2.Value": "2",
            "Tag.1.Key": "a",
            "DataCacheId.2": "edc-2",
            "DataCacheId.1": "edc-1",
            "EipCreateParam.ISP": "BGP",
            "DataSource.Options.#6#repoId": "r",
            "OwnerId": "ignored",
        }
    )
    assert params.tags() == [("a", ""), ("b", "2")]
    assert params.text_list("DataCacheId") == ["edc-1", "edc-2"]
    assert params.object("EipCreateParam") == {"ISP": "BGP"}
    assert params.options() == {"repoId": "r"}
    assert "OwnerId" not in params
    with pytest.raises(ApiError):
        Parameters({"Tag.x.Key": "a"}).tags()
    with pytest.raises(ApiError):
        Parameters({"Size": "big"}).integer("Size", minimum=1, maximum=2)


def test_failure_rules_are_deterministic():
    hub = assess_source("URL", {"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2"})
    assert hub.failure is None and 1 <= hub.data_size_gib <= 16
    assert assess_source("URL", {"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2"}) == hub
    assert assess_source("URL", {"url": "https://e.com/x-120GB.tar"}).data_size_gib == 120
    assert "error" in assess_source("NAS", {"server": "nas-fail.example.com"}).failure
    assert "unreachable" in assess_source("URL", {"url": "http://unreachable.example.com/x"}).failure
    assert "repoSource" in assess_source("URL", {"repoSource": "GitHub", "repoId": "a/b"}).failure
    secret_only = assess_source("URL", {"url": "https://e.com/x", "accessToken": "fail-5000gib"})
    assert secret_only.failure is None and secret_only.data_size_gib < 20  # secret values are never looked at
    assert "user:pass" not in assess_source("URL", {"url": "https://user:pass@e.com/x?sig=1"}).description
    assert size_failure(30, 20) and size_failure(20, 20) is None


def test_rate_limiter_refills():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    limiter.check("k")
    limiter.check("k")
    with pytest.raises(ApiError) as caught:
        limiter.check("k")
    assert caught.value.code == "Throttling.User" and caught.value.retry_after_ms == 500
    limiter.check("other-key")  # buckets are per access key
    now[0] += 0.5
    limiter.check("k")


def test_durations_are_set_per_phase_from_the_command_line():
    from eci_datacache_emulator.cli import durations_from

    chosen = durations_from(["loading=45", "container_starting=0.5"])
    assert (chosen.loading, chosen.container_starting, chosen.creating) == (45.0, 0.5, 30.0)
    with pytest.raises(SystemExit, match="unknown phase 'load'"):
        durations_from(["load=45"])
    with pytest.raises(SystemExit, match="'soon' is not a number"):
        durations_from(["loading=soon"])
