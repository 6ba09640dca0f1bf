"""Errors the emulator answers with, in the shape the Alibaba Cloud SDK parses.

Every failure is an `ApiError`: an HTTP status, a POP error code and a message. The server
turns it into the JSON body ``{"RequestId", "HostId", "Code", "Message", "Recommend"}``.
Codes and statuses are the real service's (docs/architecture.md, ECI facts).
"""

from __future__ import annotations


class ApiError(Exception):
    """A failed API call: becomes a JSON error response, never a traceback."""

    def __init__(self, status: int, code: str, message: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        # Only throttling sets this: the SDK raises ThrottlingException when the header is positive.
        self.retry_after_ms = retry_after_ms


def missing_parameter(name: str) -> ApiError:
    return ApiError(
        400,
        "MissingParameter",
        f'The input parameter "{name}" that is mandatory for processing this request is not supplied.',
    )


def invalid_parameter(name: str, reason: str = "") -> ApiError:
    message = f'The specified parameter "{name}" is not valid.'
    return ApiError(400, "InvalidParameter", f"{message} {reason}".strip())


def incorrect_status(data_cache_id: str, status: str, action: str) -> ApiError:
    return ApiError(
        400,
        "IncorrectStatus",
        f"The data cache {data_cache_id} is {status}; {action} is not allowed in this status.",
    )


def data_cache_not_found(data_cache_id: str, region_id: str) -> ApiError:
    # ECI documents no code for an unknown id (docs/architecture.md, ECI facts);
    # 404 with a `.NotFound` suffix is how POP APIs name a missing resource.
    return ApiError(
        404,
        "DataCache.NotFound",
        f"The specified data cache {data_cache_id} does not exist in region {region_id}.",
    )


def throttled(retry_after_ms: int) -> ApiError:
    return ApiError(
        400,
        "Throttling.User",
        "Request was denied due to user flow control.",
        retry_after_ms=max(1, retry_after_ms),
    )


def internal_error() -> ApiError:
    return ApiError(
        500,
        "InternalError",
        "The request processing has failed due to some unknown error, exception or failure.",
    )


def service_unavailable() -> ApiError:
    return ApiError(
        503,
        "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.",
    )
