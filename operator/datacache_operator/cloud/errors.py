"""One exception for every failed ECI call, classified as retryable or terminal.

:func:`classify` turns whatever the SDK raised into an :class:`EciError`:

- ``ThrottlingException`` (any response with ``x-acs-retry-after``, in milliseconds),
  ``ClientException`` (4xx) and ``ServerException`` (5xx) by their ECI code and status;
- ``UnretryableException`` wrapping ``RetryError`` (timeouts, refused or dropped
  connections, proxy errors), a non-JSON body or a credential-chain failure.

Classification table (first match wins): throttling and flow control, 5xx, transport
errors, ``IncorrectStatus`` (the cache is busy) and the platform's transient codes are
retryable; parameter, idempotency, quota, permission, account, signature and credential
codes are terminal; unknown codes fall back to the HTTP status (5xx/429 retryable, other
4xx terminal).

Secrets: the SDK's own message can embed the server's string-to-sign, its ``data``
holds the whole error body and ``UnretryableException.last_request`` the signed request
(headers, query with option values). An :class:`EciError` keeps none of that: only the
code, a trimmed and scrubbed message, the HTTP status and the request id. Raise it with
``from None`` so that the SDK exception is not printed as its cause either.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Any


class ErrorCategory(StrEnum):
    THROTTLING = "Throttling"
    SERVER = "Server"
    TRANSPORT = "Transport"
    BUSY = "Busy"
    NOT_FOUND = "NotFound"
    PARAMETER = "Parameter"
    QUOTA = "Quota"
    PERMISSION = "Permission"
    ACCOUNT = "Account"
    CREDENTIALS = "Credentials"
    CONFIGURATION = "Configuration"
    UNKNOWN = "Unknown"


# Codes we create for failures that have no ECI code.
CODE_TIMEOUT = "RequestTimeout"
CODE_CONNECTION = "ConnectionError"
CODE_TLS = "TLSError"
CODE_INVALID_RESPONSE = "InvalidResponse"
CODE_CREDENTIALS_UNAVAILABLE = "CredentialsUnavailable"
CODE_UNEXPECTED = "UnexpectedError"
CODE_CONFIGURATION = "InvalidConfiguration"
CODE_REGION_NOT_ALLOWED = "RegionNotAllowed"

# ECI documents no not-found code for DataCache operations (docs/architecture.md). These
# are the plausible spellings, our emulator's among them; any ``*.NotFound`` naming a
# data cache counts too. Never ``InvalidAccessKeyId.NotFound`` or ``InvalidAction.NotFound``.
DATA_CACHE_NOT_FOUND_CODES = frozenset(
    {
        "DataCache.NotFound",
        "DataCacheNotFound",
        "InvalidDataCache.NotFound",
        "InvalidDataCacheId.NotFound",
        "InvalidDataCacheId.NotExist",
        "ResourceNotFound",
        "InvalidResourceId.NotFound",
    }
)

# (prefix or exact code, category, retryable); a prefix ends with "." or "*".
_CODE_TABLE: tuple[tuple[str, ErrorCategory, bool], ...] = (
    ("Throttling*", ErrorCategory.THROTTLING, True),
    ("Degrade.Api", ErrorCategory.THROTTLING, True),
    ("ServiceUnavailable*", ErrorCategory.SERVER, True),
    ("InternalError*", ErrorCategory.SERVER, True),
    ("UnknownError", ErrorCategory.SERVER, True),
    ("IncorrectStatus*", ErrorCategory.BUSY, True),
    ("OperationConflict*", ErrorCategory.BUSY, True),
    ("LastTokenProcessing", ErrorCategory.BUSY, True),  # same ClientToken still in flight
    ("SignatureNonceUsed", ErrorCategory.CREDENTIALS, True),  # a new call gets a new nonce
    ("InvalidParameter*", ErrorCategory.PARAMETER, False),
    ("MissingParameter*", ErrorCategory.PARAMETER, False),
    ("Missing*", ErrorCategory.PARAMETER, False),
    ("IdempotentParameterMismatch", ErrorCategory.PARAMETER, False),
    ("InvalidAction*", ErrorCategory.PARAMETER, False),
    ("UnsupportedHTTPMethod", ErrorCategory.PARAMETER, False),
    ("IncorrectOperation", ErrorCategory.PARAMETER, False),
    ("DryRunOperation", ErrorCategory.PARAMETER, False),
    ("QuotaExceeded*", ErrorCategory.QUOTA, False),
    ("EipAddressPoolIpNotEnough", ErrorCategory.QUOTA, False),
    ("Forbidden*", ErrorCategory.PERMISSION, False),
    ("NoPermission*", ErrorCategory.PERMISSION, False),
    ("OperationDenied*", ErrorCategory.PERMISSION, False),
    ("InvalidUser*", ErrorCategory.PERMISSION, False),
    ("CreateServiceLinkedRole.Denied", ErrorCategory.PERMISSION, False),
    ("ServiceNotEnabled", ErrorCategory.ACCOUNT, False),
    ("Account.*", ErrorCategory.ACCOUNT, False),
    ("InvalidPaymentMethod*", ErrorCategory.ACCOUNT, False),
    ("EipPayInsufficientBalance", ErrorCategory.ACCOUNT, False),
    ("RegionDissolved", ErrorCategory.ACCOUNT, False),
    ("Zone.NotOnSale", ErrorCategory.ACCOUNT, False),
    ("SignatureDoesNotMatch", ErrorCategory.CREDENTIALS, False),
    ("IncompleteSignature", ErrorCategory.CREDENTIALS, False),
    ("InvalidAccessKeyId*", ErrorCategory.CREDENTIALS, False),
    ("InvalidSecurityToken*", ErrorCategory.CREDENTIALS, False),
    ("InvalidCredentials", ErrorCategory.CREDENTIALS, False),
    ("InvalidTimeStamp*", ErrorCategory.CREDENTIALS, False),  # clock skew: fix the clock
)

# Messages are cut here: after these words the gateway prints the string it signed.
_SIGNING_DETAIL = re.compile(r"(server\s+)?(string\s*to\s*sign|canonical\s*request)\b.*", re.I | re.S)
# key=value / "key": "value" pairs of anything that looks like a credential.
_SECRET_PAIR = re.compile(
    r"(?P<key>[\w-]*token|access[_-]?key[_-]?secret|ak[_-]?secret|secret|password|"
    r"signature|authorization)"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s,\"'&;)}\]]+)",
    re.I,
)
_URL_QUERY = re.compile(r"(?P<base>https?://[^\s?'\"]+)\?[^\s'\"]*", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^\s/@'\"]+@", re.I)
# Not a bare "ssl": aiohttp writes "ssl:default" in every connection error.
_TLS_FAILURE = re.compile(r"\[SSL|SSLError|SSL error|certificate|wrong.version.number|handshake|tlsv1", re.I)
_FORMATTED_PREFIX = re.compile(r"^code:\s*\d+,\s*")
_FORMATTED_SUFFIX = re.compile(r"\s*request id:\s*\S*\s*$", re.I)
MAX_MESSAGE_LENGTH = 400


def _match_code(code: str) -> tuple[ErrorCategory, bool] | None:
    for pattern, category, retryable in _CODE_TABLE:
        if pattern.endswith("*"):
            if code.startswith(pattern[:-1]):
                return category, retryable
        elif pattern.endswith("."):
            if code.startswith(pattern):
                return category, retryable
        elif code == pattern:
            return category, retryable
    return None


def is_data_cache_not_found(code: str | None) -> bool:
    if not code:
        return False
    if code in DATA_CACHE_NOT_FOUND_CODES:
        return True
    lowered = code.lower()
    return lowered.endswith((".notfound", ".notexist")) and "datacache" in lowered


def category_of(code: str, http_status: int | None) -> tuple[ErrorCategory, bool]:
    """``(category, retryable)`` of an ECI error code, falling back to the HTTP status."""
    if is_data_cache_not_found(code):
        return ErrorCategory.NOT_FOUND, False
    matched = _match_code(code)
    if matched is not None:
        return matched
    if http_status is not None:
        if http_status >= 500:
            return ErrorCategory.SERVER, True
        if http_status == 429:
            return ErrorCategory.THROTTLING, True
        if http_status == 404 and code.endswith(".NotFound"):
            return ErrorCategory.NOT_FOUND, False
        if 400 <= http_status < 500:
            return ErrorCategory.UNKNOWN, False
    return ErrorCategory.UNKNOWN, True


def scrub(text: str | None, secrets: Iterable[str] = ()) -> str:
    """A message safe for logs, events and status: no string-to-sign, no URL query or user
    and password, no ``token=...``-style values, none of ``secrets``, at most
    MAX_MESSAGE_LENGTH chars."""
    if not text:
        return ""
    text = str(text)
    if _SIGNING_DETAIL.search(text):
        text = _SIGNING_DETAIL.sub("", text).rstrip(" :.\n") + "."
    text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
    text = _URL_QUERY.sub(r"\g<base>?…", text)
    text = _SECRET_PAIR.sub(lambda m: f"{m['key']}{m['sep']}***", text)
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE_LENGTH:
        text = text[: MAX_MESSAGE_LENGTH - 1] + "…"
    return text


class EciError(Exception):
    """A failed ECI call. ``str()`` is ``"<code>: <message> (HTTP n, request id r)"``."""

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        http_status: int | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        category: ErrorCategory | None = None,
        action: str | None = None,
        region: str | None = None,
    ) -> None:
        default_category, default_retryable = category_of(code, http_status)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.category = category or default_category
        self.retryable = default_retryable if retryable is None else retryable
        self.retry_after = retry_after
        self.action = action
        self.region = region
        super().__init__(self.__str__())

    def __str__(self) -> str:
        details = [f"HTTP {self.http_status}"] if self.http_status else []
        if self.request_id:
            details.append(f"request id {self.request_id}")
        where = f" [{self.action} {self.region}]" if self.action and self.region else ""
        suffix = f" ({', '.join(details)})" if details else ""
        return f"{self.code}: {self.message or self.code}{suffix}{where}"

    def __repr__(self) -> str:
        return (
            f"EciError(code={self.code!r}, retryable={self.retryable}, http_status={self.http_status}, "
            f"request_id={self.request_id!r}, retry_after={self.retry_after})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: teach pickle/copy how to rebuild us.
        return (_rebuild, (self.__dict__.copy(),))

    @property
    def is_terminal(self) -> bool:
        return not self.retryable

    @property
    def is_not_found(self) -> bool:
        return self.category is ErrorCategory.NOT_FOUND

    @property
    def is_throttling(self) -> bool:
        return self.category is ErrorCategory.THROTTLING

    @property
    def is_busy(self) -> bool:
        return self.category is ErrorCategory.BUSY

    def retry_delay(
        self,
        attempt: int,
        *,
        base: float = 1.0,
        cap: float = 300.0,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): exponential backoff
        with equal jitter (half fixed, half random), capped, and never shorter than the
        server's retry-after. Terminal errors get ``cap``: if a caller re-checks one at all,
        it should be slowly."""
        if not self.retryable:
            return cap
        draw = (rng or random).random()
        backoff = min(cap, base * (2 ** max(0, attempt)))
        delay = backoff / 2 + draw * backoff / 2
        return float(max(delay, self.retry_after or 0.0))


def _rebuild(state: dict[str, Any]) -> EciError:
    error = EciError.__new__(EciError)
    error.__dict__.update(state)
    Exception.__init__(error, str(error))
    return error


# ---- classification of SDK exceptions ------------------------------------------------


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _server_message(exc: Any) -> str:
    """The server's own Message, not the SDK's ``"code: 400, ... request id: ..."``."""
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        raw = data.get("Message") or data.get("message")
        if raw:
            return str(raw)
    formatted = str(getattr(exc, "message", "") or "")
    return _FORMATTED_SUFFIX.sub("", _FORMATTED_PREFIX.sub("", formatted))


def _request_id(exc: Any) -> str | None:
    request_id = getattr(exc, "request_id", None)
    if not request_id or request_id == "None":
        data = getattr(exc, "data", None)
        request_id = (data.get("RequestId") or data.get("requestId")) if isinstance(data, dict) else None
    return str(request_id) if request_id and request_id != "None" else None


def _transport_error(text: str, secrets: Iterable[str]) -> tuple[str, ErrorCategory, bool, str]:
    lowered = text.lower()
    message = scrub(text, secrets)
    if _TLS_FAILURE.search(text):
        # A TLS failure is almost always https against a plain-HTTP server, or a bad CA.
        return CODE_TLS, ErrorCategory.CONFIGURATION, False, message or "TLS handshake failed"
    if not text.strip() or "timeout" in lowered or "timed out" in lowered:
        return CODE_TIMEOUT, ErrorCategory.TRANSPORT, True, message or "request timed out"
    return CODE_CONNECTION, ErrorCategory.TRANSPORT, True, message or "connection failed"


_STS_REPLY = re.compile(r'"Code"\s*:\s*"(?P<code>[^"]+)".*?"Message"\s*:\s*"(?P<message>[^"]*)"', re.DOTALL)


def _credentials_error(text: str, action: str | None, region: str | None, secrets: Iterable[str]) -> EciError:
    """No credentials to sign with. When STS refused to assume a role, its error code (e.g.
    NoPermission, EntityNotExist.Role) is the code: what the administrator must fix."""
    refused = _STS_REPLY.search(text)
    code, message = CODE_CREDENTIALS_UNAVAILABLE, text
    if refused is not None:
        code, message = refused["code"], f"STS AssumeRole: {refused['message']}"
    return EciError(
        code,
        scrub(message, secrets),
        retryable=True,
        category=ErrorCategory.CREDENTIALS,
        action=action,
        region=region,
    )


def classify(
    exc: BaseException,
    *,
    action: str | None = None,
    region: str | None = None,
    secrets: Iterable[str] = (),
) -> EciError:
    """The :class:`EciError` for any exception an SDK call raised.

    ``secrets`` are values of the failed request that must not be echoed (sensitive data
    source options); they are scrubbed from the message if the server quoted them.
    """
    if isinstance(exc, EciError):
        return exc
    secrets = list(secrets)
    names = _class_names(exc)

    if names & {"ThrottlingException", "ClientException", "ServerException", "ResponseException"}:
        exc_any: Any = exc
        status = getattr(exc_any, "status_code", None) or getattr(exc_any, "statusCode", None)
        status = int(status) if isinstance(status, int | str) and str(status).isdigit() else None
        code = str(getattr(exc_any, "code", "") or "")
        if code in ("", "None"):
            code = f"HTTP{status}" if status else CODE_UNEXPECTED
        retry_after_ms = getattr(exc_any, "retry_after", None)
        retry_after = float(retry_after_ms) / 1000 if isinstance(retry_after_ms, int | float) else None
        message = scrub(_server_message(exc_any), secrets)
        if "ThrottlingException" in names or (retry_after and retry_after > 0):
            # The gateway asked us to come back later: retryable whatever the code says.
            return EciError(
                code,
                message,
                http_status=status,
                request_id=_request_id(exc_any),
                retryable=True,
                retry_after=retry_after,
                category=ErrorCategory.THROTTLING,
                action=action,
                region=region,
            )
        return EciError(
            code, message, http_status=status, request_id=_request_id(exc_any), action=action, region=region
        )

    if "UnretryableException" in names or "RetryError" in names:
        inner = getattr(exc, "inner_exception", None) if "UnretryableException" in names else exc
        if inner is not None and inner is not exc and _class_names(inner) & {"ResponseException"}:
            return classify(inner, action=action, region=region, secrets=secrets)
        inner_names = _class_names(inner) if inner is not None else set()
        if "CredentialException" in inner_names:
            # The chain could not produce credentials (no env keys, IMDS or STS unreachable).
            # Retryable: refreshing providers recover by themselves once STS/IMDS answer.
            return _credentials_error(getattr(inner, "message", None) or str(inner), action, region, secrets)
        if inner is None or "RetryError" in inner_names:
            text = str(getattr(inner, "message", "") or "") if inner is not None else ""
            code, category, retryable, message = _transport_error(text, secrets)
            return EciError(
                code, message, retryable=retryable, category=category, action=action, region=region
            )
        if isinstance(inner, OSError) or "ClientError" in inner_names:
            # aiohttp's own errors (ServerDisconnectedError...) are not OSErrors, so the SDK
            # hands them over unwrapped.
            return classify(inner, action=action, region=region, secrets=secrets)
        # A body that is not JSON (an HTML 502 from a proxy, an empty 200): transient.
        return EciError(
            CODE_INVALID_RESPONSE,
            scrub(f"unreadable ECI response ({type(inner).__name__}: {inner})", secrets),
            retryable=True,
            category=ErrorCategory.SERVER,
            action=action,
            region=region,
        )

    if "CredentialException" in names:
        return _credentials_error(str(exc), action, region, secrets)

    if isinstance(exc, TimeoutError):
        return EciError(
            CODE_TIMEOUT,
            "request timed out",
            retryable=True,
            category=ErrorCategory.TRANSPORT,
            action=action,
            region=region,
        )
    if isinstance(exc, OSError) or "ClientError" in names:
        code, category, retryable, message = _transport_error(f"{type(exc).__name__}: {exc}", secrets)
        return EciError(code, message, retryable=retryable, category=category, action=action, region=region)

    # A bug (ours or the SDK's): retrying would not fix it.
    return EciError(
        CODE_UNEXPECTED,
        scrub(f"{type(exc).__name__}: {exc}", secrets),
        retryable=False,
        category=ErrorCategory.UNKNOWN,
        action=action,
        region=region,
    )
