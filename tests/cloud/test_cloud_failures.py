"""Failures through the real SDK: faults, bad keys, timeouts; never a secret in an error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from eci_datacache_emulator import Emulator
from eci_datacache_emulator.admin_client import EmulatorAdmin

from datacache_operator.cloud import CreateRequest, DataSource, EciClient, EciError, ErrorCategory

REGION = "cn-hangzhou"
TOKEN = "hf_failureTestSecretToken77"


async def failure_of(call: Any) -> EciError:
    try:
        await call
    except EciError as error:
        return error
    raise AssertionError("the call should have failed")


def shown(error: EciError) -> str:
    """Everything a log line or a status could show of the error."""
    return "\n".join(
        [str(error), repr(error), error.message, "".join(traceback.format_exception(error)), str(error.args)]
    )


def secret_request(path: str = "/secret/model", **changes: Any) -> CreateRequest:
    source = DataSource(type="URL", options={"repoId": "org/private", "accessToken": TOKEN})
    return CreateRequest(**{"path": path, "data_source": source, **changes})


async def test_throttling_is_retryable_with_retry_after(eci: EciClient, admin: EmulatorAdmin) -> None:
    admin.set_faults(fault_throttle_rate=1.0, actions=["DescribeDataCaches"])
    error = await failure_of(eci.describe(REGION, "edc-any0000000000"))
    assert (error.code, error.http_status, error.category) == (
        "Throttling.User",
        400,
        ErrorCategory.THROTTLING,
    )
    assert error.retryable and error.retry_after == pytest.approx(0.2)
    assert error.request_id and error.request_id in str(error)
    assert error.retry_delay(0) >= 0.2


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [("fault_500_rate", "InternalError", 500), ("fault_503_rate", "ServiceUnavailable", 503)],
)
async def test_server_errors_are_retryable(
    eci: EciClient,
    admin: EmulatorAdmin,
    hooks: Any,
    make_client: Callable[..., EciClient],
    fault: str,
    code: str,
    status: int,
) -> None:
    eci = make_client(hooks=hooks)
    admin.set_faults(**{fault: 1.0})
    error = await failure_of(eci.create(REGION, secret_request(), client_token="t-5xx"))
    assert (error.code, error.http_status, error.retryable) == (code, status, True)
    assert TOKEN not in shown(error)
    assert hooks.calls[-1][:3] == ("CreateDataCache", REGION, code)


async def test_a_dropped_connection_is_a_retryable_connection_error(
    eci: EciClient, admin: EmulatorAdmin
) -> None:
    admin.set_faults(fault_drop_rate=1.0)
    error = await failure_of(eci.create(REGION, secret_request(), client_token="t-drop"))
    assert error.code == "ConnectionError" and error.retryable and error.category is ErrorCategory.TRANSPORT
    assert TOKEN not in shown(error)


async def test_a_slow_answer_is_a_retryable_timeout(
    make_client: Callable[..., EciClient], admin: EmulatorAdmin
) -> None:
    eci = make_client(read_timeout=0.3)
    admin.set_faults(fault_latency_ms=2000)
    error = await failure_of(eci.describe(REGION, "edc-slow000000000"))
    assert (error.code, error.retryable) == ("RequestTimeout", True)


async def test_wrong_secret_is_a_terminal_signature_error(
    make_client: Callable[..., EciClient], admin: EmulatorAdmin, keys: Any
) -> None:
    wrong_secret = "wrong-SECRET-value-9c2e"
    eci = make_client(credential=keys.credential(keys.access_key_id, wrong_secret))
    error = await failure_of(eci.create(REGION, secret_request(), client_token="t-sig"))
    assert (error.code, error.http_status, error.retryable) == ("SignatureDoesNotMatch", 400, False)
    assert error.category is ErrorCategory.CREDENTIALS
    text = shown(error)
    for secret in (wrong_secret, keys.access_key_secret, TOKEN):
        assert secret not in text
    assert "string to sign" not in text.lower() and "ACS3-HMAC-SHA256\n" not in text


async def test_unknown_key_is_terminal(
    make_client: Callable[..., EciClient], admin: EmulatorAdmin, keys: Any
) -> None:
    eci = make_client(credential=keys.credential("no-such-access-key", "whatever-secret-value"))
    error = await failure_of(eci.describe(REGION, "edc-x00000000000"))
    assert (error.code, error.http_status, error.retryable) == ("InvalidAccessKeyId.NotFound", 404, False)
    assert not error.is_not_found  # a missing key is not a missing cache


async def test_bad_parameters_are_terminal_and_hide_the_request(eci: EciClient, admin: EmulatorAdmin) -> None:
    error = await failure_of(eci.create(REGION, secret_request(bucket="eci-system"), client_token="t-param"))
    assert (error.code, error.retryable, error.category) == (
        "InvalidParameter",
        False,
        ErrorCategory.PARAMETER,
    )
    assert "Bucket" in error.message
    assert TOKEN not in shown(error)


async def test_token_reuse_with_other_parameters_is_terminal(eci: EciClient, admin: EmulatorAdmin) -> None:
    await eci.create(REGION, secret_request("/a"), client_token="t-reuse")
    error = await failure_of(eci.create(REGION, secret_request("/b"), client_token="t-reuse"))
    assert (error.code, error.retryable) == ("IdempotentParameterMismatch", False)
    assert TOKEN not in shown(error)


async def test_https_against_the_plain_http_emulator_is_a_terminal_tls_error(
    make_client: Callable[..., EciClient], admin: EmulatorAdmin
) -> None:
    eci = make_client(protocol="https")
    error = await failure_of(eci.describe(REGION, "edc-tls00000000000"))
    assert (error.code, error.retryable) == ("TLSError", False)


def test_default_credential_chain_from_environment(emulator: Emulator, keys: Any) -> None:
    """The production path: no injected credential, keys from ALIBABA_CLOUD_ACCESS_KEY_*.
    A fresh interpreter, because the SDK reads those variables once, at import."""
    script = """
import asyncio, json
from datacache_operator.cloud import EciClient, CreateRequest
from datacache_operator.settings import OperatorSettings

async def main():
    async with EciClient(OperatorSettings()) as eci:
        cache_id = await eci.create("cn-hangzhou", CreateRequest(path="/chain"), client_token="chain-1")
        found = await eci.describe("cn-hangzhou", cache_id)
        print(json.dumps({"id": cache_id, "found": found.data_cache_id}))

asyncio.run(main())
"""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ALIBABA_CLOUD_", "DATACACHE_", "ECI_")) and "proxy" not in key.lower()
    }
    environment.update(
        {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": keys.access_key_id,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": keys.access_key_secret,
            "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
            "ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true",
            "ECI_ENDPOINT": emulator.endpoint,  # loopback: http without ECI_PROTOCOL
        }
    )
    admin = EmulatorAdmin(emulator.admin_url)
    admin.reset()
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["id"] == output["found"]
    [call] = admin.calls(action="CreateDataCache")
    assert call["outcome"] == "Success"
    admin.reset()
