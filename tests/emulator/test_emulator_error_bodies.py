"""Error answers in the real service's words (docs/architecture.md, ECI facts), as
the unmodified SDK reads them: status, code, message, RequestId, HostId and Recommend.

Where the SDK cannot send the request (no signature, a stale timestamp, a reused nonce, no
action, a body other than the one hashed), `send_raw` signs it by hand and the JSON body is
checked as it is."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from alibabacloud_eci20180808 import models
from alibabacloud_eci20180808.client import Client
from alibabacloud_tea_openapi import models as openapi_models
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException, ThrottlingException
from alibabacloud_tea_util.models import RuntimeOptions
from eci_datacache_emulator.admin_client import EmulatorAdmin
from eci_datacache_emulator.operations import Limits
from eci_datacache_emulator.signature import format_timestamp
from emulator_support import ACCESS_KEY_ID, REGION, create_request, describe, make_client, send_raw

BODY_KEYS = {"RequestId", "HostId", "Code", "Message", "Recommend"}
STRING_TO_SIGN = "server string to sign is:"
SIGNATURE_MISMATCH = f"Specified signature is not matched with our calculation. {STRING_TO_SIGN}"
WRONG_SECRET = "not-the-secret"


def check_body(body: dict[str, Any], status: int, code: str, message: str, region: str | None = REGION):
    """The POP error body: exactly these keys, the documented words, a Recommend link to this code."""
    assert set(body) == BODY_KEYS, body
    assert body["Code"] == code
    assert body["Message"].startswith(message), body["Message"]
    assert body["HostId"] == (f"eci.{region}.aliyuncs.com" if region else "eci.aliyuncs.com")
    request_id = body["RequestId"]
    assert re.fullmatch(r"[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}", request_id), request_id
    assert body["Recommend"] == (
        f"https://api.aliyun.com/troubleshoot?q={code}&product=Eci&requestId={request_id}"
    )


def call_action(client, action: str, method: str = "POST") -> Any:
    """Any action through the SDK's generic call, as the generated operations make it."""
    params = openapi_models.Params(
        action=action, version="2018-08-08", protocol="HTTPS", pathname="/", method=method,
        auth_type="AK", style="RPC", req_body_type="formData", body_type="json",
    )  # fmt: skip
    request = openapi_models.OpenApiRequest(query={"RegionId": REGION})
    return client.call_api(params, request, RuntimeOptions())


@dataclass(frozen=True)
class Env:
    endpoint: str
    client: Client
    admin: EmulatorAdmin


def reuse_token(env: Env) -> None:
    env.client.create_data_cache(create_request("/a", client_token="token-1"))
    env.client.create_data_cache(create_request("/b", client_token="token-1"))


def update_while_creating(env: Env) -> None:
    created = env.client.create_data_cache(create_request()).body.data_cache_id
    env.client.update_data_cache(
        models.UpdateDataCacheRequest(region_id=REGION, data_cache_id=created, size=40)
    )


def fault(**rates: float) -> Callable[[Env], Any]:
    def trigger(env: Env) -> Any:
        env.admin.set_faults(**rates)
        return describe(env.client)

    return trigger


# (trigger(env), exception class, HTTP status, code, documented message start, region)
SDK_CASES = {
    "signature-v3": (
        lambda env: describe(make_client(env.endpoint, access_key_secret=WRONG_SECRET)),
        ClientException, 400, "SignatureDoesNotMatch", SIGNATURE_MISMATCH, REGION,
    ),
    "signature-v1": (
        lambda env: describe(make_client(env.endpoint, access_key_secret=WRONG_SECRET, v1=True)),
        ClientException, 400, "SignatureDoesNotMatch", SIGNATURE_MISMATCH, REGION,
    ),
    "unknown-access-key": (
        lambda env: describe(make_client(env.endpoint, access_key_id="nobody")),
        ClientException, 404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.", REGION,
    ),
    "token-with-a-permanent-key": (
        lambda env: describe(make_client(env.endpoint, security_token="unexpected")),
        ClientException, 400, "InvalidSecurityToken.MismatchWithAccessKey", "", REGION,
    ),
    "unknown-action": (
        lambda env: call_action(env.client, "DescribeEverything"),
        ClientException, 404, "InvalidAction.NotFound", "Specified api is not found", REGION,
    ),
    "unsupported-method": (
        lambda env: call_action(env.client, "DescribeDataCaches", method="PUT"),
        ClientException, 403, "UnsupportedHTTPMethod", "This http method is not supported.", REGION,
    ),
    "missing-parameter": (
        lambda env: env.client.describe_data_caches(models.DescribeDataCachesRequest()),
        ClientException, 400, "MissingParameter",
        'The input parameter "RegionId" that is mandatory for processing this request is not supplied.',
        None,
    ),
    "invalid-parameter": (
        lambda env: env.client.create_data_cache(create_request(size=5)),
        ClientException, 400, "InvalidParameter", 'The specified parameter "Size" is not valid.', REGION,
    ),
    "idempotent-parameter-mismatch": (
        reuse_token, ClientException, 400, "IdempotentParameterMismatch",
        "The request uses the same client token as a previous, but non-identical request.", REGION,
    ),
    "incorrect-status": (
        update_while_creating, ClientException, 400, "IncorrectStatus", "The data cache edc-", REGION,
    ),
    "throttling": (
        fault(fault_throttle_rate=1.0), ThrottlingException, 400, "Throttling.User",
        "Request was denied due to user flow control.", REGION,
    ),
    "internal-error": (
        fault(fault_500_rate=1.0), ServerException, 500, "InternalError",
        "The request processing has failed due to some unknown error, exception or failure.", REGION,
    ),
    "service-unavailable": (
        fault(fault_503_rate=1.0), ServerException, 503, "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.", REGION,
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("trigger", "exception", "status", "code", "message", "region"),
    list(SDK_CASES.values()),
    ids=list(SDK_CASES),
)
def test_the_sdk_reads_each_documented_error(
    emulator, client, admin, trigger, exception, status, code, message, region
):
    with pytest.raises(exception) as caught:
        trigger(Env(emulator.endpoint, client, admin))
    error = caught.value
    assert (type(error), error.code, error.status_code) == (exception, code, status)
    body = {key: value for key, value in error.data.items() if key != "statusCode"}
    check_body(body, status, code, message, region)
    assert error.request_id == body["RequestId"]
    assert error.message == f"code: {status}, {body['Message']} request id: {body['RequestId']}"


def test_quota_exceeded_is_403_in_the_documented_words(emulator, client):
    emulator.service.limits = Limits(quota=1)
    client.create_data_cache(create_request("/a"))
    with pytest.raises(ClientException) as caught:
        client.create_data_cache(create_request("/b"))
    assert (caught.value.code, caught.value.status_code) == ("QuotaExceeded", 403)
    body = {key: value for key, value in caught.value.data.items() if key != "statusCode"}
    check_body(body, 403, "QuotaExceeded", "DataCache quota exceeded.")


# (send_raw keyword arguments, HTTP status, code, documented message start)
RAW_CASES = {
    "no-signature": ({"sign": False}, 400, "IncompleteSignature",
                     "The request signature does not conform to Aliyun standards."),
    "stale-timestamp": ({"date": "stale"}, 400, "InvalidTimeStamp.Expired",
                        "Specified time stamp or date value is expired."),
    "no-action": ({"action": None}, 400, "MissingParameter",
                  'The input parameter "Action" that is mandatory for processing this request is not supplied.'),
    "body-not-the-hashed-one": ({"content_sha256": "0" * 64}, 400, "SignatureDoesNotMatch", SIGNATURE_MISMATCH),
}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "status", "code", "message"), list(RAW_CASES.values()), ids=list(RAW_CASES)
)
def test_requests_the_sdk_never_sends_get_the_documented_error(emulator, changes, status, code, message):
    changes = dict(changes)
    if changes.get("date") == "stale":
        changes["date"] = format_timestamp(time.time() - 3600)
    action = changes.pop("action", "DescribeDataCaches")
    response = send_raw(emulator.endpoint, action, {"RegionId": REGION}, **changes)
    assert response.status_code == status
    assert response.headers["x-acs-request-id"] == response.json()["RequestId"]
    check_body(response.json(), status, code, message)


def test_a_reused_nonce_gets_the_documented_error(emulator):
    send_raw(emulator.endpoint, "DescribeDataCaches", {"RegionId": REGION}, nonce="once")
    response = send_raw(emulator.endpoint, "DescribeDataCaches", {"RegionId": REGION}, nonce="once")
    check_body(response.json(), 400, "SignatureNonceUsed", "Specified signature nonce was used already.")


@pytest.fixture
def sent(monkeypatch) -> list[requests.PreparedRequest]:
    """What the sync SDK puts on the wire: its `requests` session observed, the SDK unchanged."""
    seen: list[requests.PreparedRequest] = []
    send = requests.Session.send

    def record(self, request, **kwargs):
        seen.append(request)
        return send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", record)
    return seen


def server_string_to_sign(error: ClientException) -> str:
    message = error.data["Message"]
    assert message.startswith(SIGNATURE_MISMATCH), message
    return message[len(SIGNATURE_MISMATCH) :]


def test_v3_mismatch_gives_the_string_the_client_signed(emulator, sent):
    """A wrong secret: the server's string is the client's own, which is how a client tells
    a wrong secret (same string) from a wrong encoding (another string)."""
    with pytest.raises(ClientException) as caught:
        describe(make_client(emulator.endpoint, access_key_secret=WRONG_SECRET))
    string_to_sign = server_string_to_sign(caught.value)
    assert re.fullmatch(r"ACS3-HMAC-SHA256\n[0-9a-f]{64}", string_to_sign), string_to_sign
    sent_signature = re.search(r"Signature=([0-9a-f]+)", sent[-1].headers["Authorization"])[1]
    signed = hmac.new(WRONG_SECRET.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    assert signed == sent_signature


def test_v1_mismatch_gives_the_string_the_client_signed(emulator, sent):
    with pytest.raises(ClientException) as caught:
        describe(make_client(emulator.endpoint, access_key_secret=WRONG_SECRET, v1=True))
    string_to_sign = server_string_to_sign(caught.value)
    assert string_to_sign.startswith("POST&%2F&")
    assert f"AccessKeyId%3D{ACCESS_KEY_ID}" in string_to_sign and "RegionId%3Dcn-hangzhou" in string_to_sign
    sent_signature = parse_qs(urlsplit(sent[-1].url).query)["Signature"][0]
    digest = hmac.new(f"{WRONG_SECRET}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    assert base64.b64encode(digest).decode() == sent_signature


async def test_the_async_client_gets_the_string_to_sign_too(async_emulator):
    client = make_client(async_emulator.endpoint, access_key_secret=WRONG_SECRET)
    with pytest.raises(ClientException) as caught:
        await client.describe_data_caches_async(models.DescribeDataCachesRequest(region_id=REGION))
    assert re.fullmatch(r"ACS3-HMAC-SHA256\n[0-9a-f]{64}", server_string_to_sign(caught.value))
