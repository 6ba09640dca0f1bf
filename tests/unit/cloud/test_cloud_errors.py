"""classify(): the real SDK exception classes, built the way the SDK builds them."""

from __future__ import annotations

import pickle
import random
from typing import Any

import aiohttp
import pytest
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException, ThrottlingException
from darabonba.exceptions import RetryError, UnretryableException
from darabonba.policy.retry import RetryPolicyContext
from darabonba.request import DaraRequest

from datacache_operator.cloud.errors import (
    CODE_CONNECTION,
    CODE_CREDENTIALS_UNAVAILABLE,
    CODE_INVALID_RESPONSE,
    CODE_TIMEOUT,
    CODE_TLS,
    CODE_UNEXPECTED,
    EciError,
    ErrorCategory,
    classify,
    is_data_cache_not_found,
    scrub,
)

TOKEN = "hf_TopSecretTokenValue123"


def sdk_error(status: int, code: str, message: str, *, retry_after: int | None = None) -> Exception:
    """What tea_openapi's do_request raises for an error response."""
    request_id = "5D0A3F4E-1111-2222-3333-444455556666"
    data = {"RequestId": request_id, "HostId": "eci.aliyuncs.com", "Code": code, "Message": message}
    kwargs: dict[str, Any] = {
        "status_code": status,
        "code": code,
        "message": f"code: {status}, {message} request id: {request_id}",
        "detail": "None",
        "description": "None",
        "data": data,
        "request_id": request_id,
    }
    if retry_after is not None:
        return ThrottlingException(retry_after=retry_after, **kwargs)
    if status < 500:
        return ClientException(access_denied_detail=None, **kwargs)
    return ServerException(**kwargs)


def unretryable(inner: Exception) -> UnretryableException:
    """What the SDK raises after a transport failure, with the signed request attached."""
    request = DaraRequest()
    request.query = {"DataSource.Options.accessToken": TOKEN}
    request.headers = {"x-acs-security-token": "STS-token-value", "authorization": "ACS3-HMAC-SHA256 ..."}
    return UnretryableException(
        RetryPolicyContext(retries_attempted=1, http_request=request, exception=inner)
    )


@pytest.mark.parametrize(
    ("status", "code", "retryable", "category"),
    [
        (400, "Throttling.User", True, ErrorCategory.THROTTLING),
        (400, "Throttling", True, ErrorCategory.THROTTLING),
        (400, "Degrade.Api", True, ErrorCategory.THROTTLING),
        (500, "InternalError", True, ErrorCategory.SERVER),
        (503, "ServiceUnavailable", True, ErrorCategory.SERVER),
        (502, "SomethingNew", True, ErrorCategory.SERVER),
        (400, "IncorrectStatus", True, ErrorCategory.BUSY),
        (400, "InvalidParameter", False, ErrorCategory.PARAMETER),
        (400, "InvalidParameter.Bucket", False, ErrorCategory.PARAMETER),
        (400, "MissingParameter", False, ErrorCategory.PARAMETER),
        (400, "MissingRegionId", False, ErrorCategory.PARAMETER),
        (400, "IdempotentParameterMismatch", False, ErrorCategory.PARAMETER),
        (403, "QuotaExceeded", False, ErrorCategory.QUOTA),
        (403, "QuotaExceeded.DataCache", False, ErrorCategory.QUOTA),
        (403, "Forbidden.RAM", False, ErrorCategory.PERMISSION),
        (403, "Forbidden.SubUser", False, ErrorCategory.PERMISSION),
        (403, "NoPermission", False, ErrorCategory.PERMISSION),
        (400, "Account.Arrearage", False, ErrorCategory.ACCOUNT),
        (400, "SignatureDoesNotMatch", False, ErrorCategory.CREDENTIALS),
        (400, "IncompleteSignature", False, ErrorCategory.CREDENTIALS),
        (404, "InvalidAccessKeyId.NotFound", False, ErrorCategory.CREDENTIALS),
        (400, "InvalidAccessKeyId.Inactive", False, ErrorCategory.CREDENTIALS),
        (400, "InvalidSecurityToken.Expired", False, ErrorCategory.CREDENTIALS),
        (404, "DataCache.NotFound", False, ErrorCategory.NOT_FOUND),
        (404, "InvalidAction.NotFound", False, ErrorCategory.PARAMETER),
        (400, "SomethingNew", False, ErrorCategory.UNKNOWN),
        (429, "SomethingNew", True, ErrorCategory.THROTTLING),
    ],
)
def test_classification_table(status: int, code: str, retryable: bool, category: ErrorCategory) -> None:
    error = classify(sdk_error(status, code, "a message"), action="CreateDataCache", region="cn-hangzhou")
    assert (error.code, error.http_status, error.retryable, error.category) == (
        code,
        status,
        retryable,
        category,
    )
    assert error.request_id == "5D0A3F4E-1111-2222-3333-444455556666"
    assert error.message == "a message"
    assert error.is_terminal is not retryable


def test_throttling_exception_carries_retry_after_in_seconds() -> None:
    error = classify(sdk_error(400, "Throttling.User", "flow control", retry_after=1500))
    assert error.retryable and error.is_throttling
    assert error.retry_after == 1.5
    assert error.retry_delay(0, rng=random.Random(1)) >= 1.5


def test_retry_after_makes_even_an_odd_code_retryable() -> None:
    error = classify(sdk_error(400, "InvalidParameter", "busy, come back", retry_after=200))
    assert error.retryable and error.retry_after == 0.2


def test_signature_error_message_drops_the_string_to_sign() -> None:
    raw = (
        "Specified signature is not matched with our calculation. server string to sign is:"
        "ACS3-HMAC-SHA256\n20f6aa9d4e0bbe9c"
    )
    error = classify(sdk_error(400, "SignatureDoesNotMatch", raw))
    assert "string to sign" not in str(error).lower()
    assert "20f6aa9d4e0bbe9c" not in str(error)
    assert str(error).startswith(
        "SignatureDoesNotMatch: Specified signature is not matched with our calculation."
    )
    assert "request id 5D0A3F4E" in str(error)


def test_server_quoting_a_secret_is_scrubbed() -> None:
    exc = sdk_error(400, "InvalidParameter", f'The value "{TOKEN}" of DataSource.Options.accessToken is bad')
    error = classify(exc, secrets=[TOKEN])
    assert TOKEN not in str(error) and TOKEN not in error.message and TOKEN not in repr(error)
    assert "***" in error.message


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("GET http://127.0.0.1:9/?DataSource.Options.accessToken=abc123def failed", "abc123def"),
        ("accessToken=abc123def rejected", "abc123def"),
        ('{"akSecret": "abc123def"}', "abc123def"),
        ("x-acs-security-token: abc123def", "abc123def"),
    ],
)
def test_scrub_removes_credential_looking_values(text: str, leaked: str) -> None:
    assert leaked not in scrub(text)


def test_scrub_limits_length() -> None:
    assert len(scrub("x" * 5000)) <= 400


@pytest.mark.parametrize(
    ("inner_message", "code", "retryable"),
    [
        (
            "Cannot connect to host 127.0.0.1:1 ssl:default [Connect call failed ('127.0.0.1', 1)]",
            CODE_CONNECTION,
            True,
        ),
        ("Server disconnected", CODE_CONNECTION, True),
        ("Timeout on reading data from socket", CODE_TIMEOUT, True),
        ("", CODE_TIMEOUT, True),  # asyncio.TimeoutError() has no message
        (
            "Cannot connect to host eci.cn-hangzhou.aliyuncs.com:443 ssl:default "
            "[[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1000)]",
            CODE_TLS,
            False,
        ),
    ],
)
def test_transport_failures(inner_message: str, code: str, retryable: bool) -> None:
    error = classify(unretryable(RetryError(inner_message)))
    assert (error.code, error.retryable) == (code, retryable)
    assert error.http_status is None
    shown = str(error) + repr(error) + error.message
    assert TOKEN not in shown and "STS-token-value" not in shown


@pytest.mark.parametrize(
    ("inner", "code"),
    [
        (aiohttp.ServerDisconnectedError(), CODE_CONNECTION),
        (aiohttp.ServerTimeoutError("Timeout on reading data from socket"), CODE_TIMEOUT),
        (ConnectionRefusedError(111, "Connection refused"), CODE_CONNECTION),
    ],
)
def test_unwrapped_aiohttp_and_os_errors(inner: Exception, code: str) -> None:
    """aiohttp errors that are not OSErrors reach us unwrapped inside UnretryableException."""
    error = classify(unretryable(inner))
    assert (error.code, error.retryable, error.category) == (code, True, ErrorCategory.TRANSPORT)


def test_non_json_body_is_a_retryable_invalid_response() -> None:
    error = classify(
        unretryable(RuntimeError("Failed to parse the value as json format, Value: <html>502</html>"))
    )
    assert (error.code, error.retryable) == (CODE_INVALID_RESPONSE, True)


def test_credential_chain_failure_is_retryable() -> None:
    from alibabacloud_credentials.exceptions import CredentialException

    error = classify(unretryable(CredentialException("unable to load credentials from any of the providers")))
    assert (error.code, error.retryable, error.category) == (
        CODE_CREDENTIALS_UNAVAILABLE,
        True,
        ErrorCategory.CREDENTIALS,
    )


def test_a_role_sts_refused_to_assume_is_its_sts_code() -> None:
    """What the administrator must fix (the role's trust policy, its name), not just "no credentials"."""
    from alibabacloud_credentials.exceptions import CredentialException

    reply = (
        '{"RequestId": "C2", "HostId": "sts.aliyuncs.com", "Code": "NoPermission", '
        '"Message": "No permission perform sts:AssumeRole on this Role.", "Recommend": "https://x"}'
    )
    text = f"error refreshing credentials from ram_role_arn, http_code: 403, result: {reply}"
    for raised in (CredentialException(text), unretryable(CredentialException(text))):
        error = classify(raised)
        assert (error.code, error.retryable, error.category) == (
            "NoPermission",
            True,
            ErrorCategory.CREDENTIALS,
        )
        assert error.message == "STS AssumeRole: No permission perform sts:AssumeRole on this Role."


def test_no_credentials_at_all_is_terminal() -> None:
    # The SDK's own error when Config has no credential.
    error = classify(
        ClientException(code="InvalidCredentials", message="Please set up the credentials correctly.")
    )
    assert (error.code, error.retryable) == ("InvalidCredentials", False)


def test_plain_python_errors() -> None:
    assert classify(TimeoutError()).code == CODE_TIMEOUT
    assert classify(ConnectionResetError("reset by peer")).code == CODE_CONNECTION
    bug = classify(TypeError("unsupported operand"))
    assert (bug.code, bug.retryable) == (CODE_UNEXPECTED, False)


def test_eci_error_passes_through_unchanged() -> None:
    error = EciError("IncorrectStatus", "busy", http_status=400)
    assert classify(error) is error


def test_retry_delay_backs_off_with_jitter_and_cap() -> None:
    error = EciError("InternalError", "boom", http_status=500)
    rng = random.Random(7)
    delays = [error.retry_delay(n, base=1, cap=60, rng=rng) for n in range(12)]
    for attempt, delay in enumerate(delays):
        ceiling = min(60, 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 60
    assert EciError("InvalidParameter", "bad", http_status=400).retry_delay(0, cap=90) == 90


def test_errors_survive_copy_and_pickle() -> None:
    error = classify(
        sdk_error(400, "Throttling.User", "slow down", retry_after=300), action="DescribeDataCaches"
    )
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.code, clone.retry_after, clone.retryable, clone.action, str(clone)) == (
        error.code,
        error.retry_after,
        error.retryable,
        error.action,
        str(error),
    )


@pytest.mark.parametrize(
    ("code", "not_found"),
    [
        ("DataCache.NotFound", True),
        ("InvalidDataCacheId.NotFound", True),
        ("InvalidAccessKeyId.NotFound", False),
        ("InvalidAction.NotFound", False),
        (None, False),
    ],
)
def test_not_found_codes(code: str | None, not_found: bool) -> None:
    assert is_data_cache_not_found(code) is not_found
