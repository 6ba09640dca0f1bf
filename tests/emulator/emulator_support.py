"""Helpers for the emulator tests: official SDK clients, requests, raw signing, waiting."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import requests
from alibabacloud_eci20180808 import models
from alibabacloud_eci20180808.client import Client
from alibabacloud_tea_openapi import models as openapi_models
from eci_datacache_emulator.signature import (
    format_timestamp,
    sha256_hex,
    v3_signature,
    v3_string_to_sign,
)

ACCESS_KEY_ID = "test-access-key-id"
ACCESS_KEY_SECRET = "test-access-key-secret"
REGION = "cn-hangzhou"
OTHER_REGION = "cn-beijing"
# Long enough for every phase of every operation to finish at the default time scale.
ONE_HOUR = 3600.0


def make_client(
    endpoint: str,
    *,
    access_key_id: str = ACCESS_KEY_ID,
    access_key_secret: str = ACCESS_KEY_SECRET,
    security_token: str | None = None,
    v1: bool = False,
    **config: Any,
) -> Client:
    return Client(
        openapi_models.Config(
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            security_token=security_token,
            endpoint=endpoint,
            protocol="http",
            signature_algorithm="v2" if v1 else None,
            **config,
        )
    )


def create_request(path: str = "/models/qwen", **fields: Any) -> models.CreateDataCacheRequest:
    """A valid create request; keyword arguments override or add fields."""
    fields.setdefault("region_id", REGION)
    fields.setdefault(
        "data_source",
        models.CreateDataCacheRequestDataSource(
            type="URL", options={"repoSource": "HuggingFace/Model", "repoId": "Qwen/Qwen2-0.5B"}
        ),
    )
    return models.CreateDataCacheRequest(path=path, **fields)


def describe(client: Client, region: str = REGION, **fields: Any) -> models.DescribeDataCachesResponseBody:
    return client.describe_data_caches(models.DescribeDataCachesRequest(region_id=region, **fields)).body


def describe_one(client: Client, data_cache_id: str, region: str = REGION):
    caches = describe(client, region, data_cache_id=[data_cache_id]).data_caches
    return caches[0] if caches else None


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def send_raw(
    endpoint: str,
    action: str | None,
    params: dict[str, str],
    *,
    access_key_id: str = ACCESS_KEY_ID,
    access_key_secret: str = ACCESS_KEY_SECRET,
    sign: bool = True,
    date: str | None = None,
    nonce: str | None = None,
    path: str = "/",
    encode_keys: bool = False,
    content_sha256: str | None = None,
) -> requests.Response:
    """A V3 request signed by hand, for what the SDK never sends; the body is empty, and
    `content_sha256` claims another hash of it."""
    headers = {
        "host": endpoint,
        "x-acs-version": "2018-08-08",
        "x-acs-date": date or format_timestamp(time.time()),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": content_sha256 or sha256_hex(b""),
    }
    if action is not None:
        headers["x-acs-action"] = action
    if sign:
        signed = sorted(headers)
        string_to_sign = v3_string_to_sign(
            method="POST",
            path=path,
            params=params,
            headers={name: [value] for name, value in headers.items()},
            signed_headers=signed,
            hashed_payload=headers["x-acs-content-sha256"],
            encode_keys=encode_keys,
        )
        headers["Authorization"] = (
            f"ACS3-HMAC-SHA256 Credential={access_key_id},SignedHeaders={';'.join(signed)},"
            f"Signature={v3_signature(access_key_secret, string_to_sign)}"
        )
    query = f"?{urlencode(params)}" if params else ""
    return requests.post(f"http://{endpoint}{path}{query}", headers=headers, timeout=10)
