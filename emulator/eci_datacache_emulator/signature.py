"""Request signatures: the V3 ``ACS3-HMAC-SHA256`` and the legacy V1 ``HMAC-SHA1`` schemes.

Verification recomputes what the SDK signed (``alibabacloud_tea_openapi/utils.py``):
the query is decoded first and re-encoded canonically, because the sync (requests) and
async (aiohttp/yarl) clients encode the same values differently on the wire. The same
functions sign requests in tests that need to send something the SDK never would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

from .errors import ApiError

V3_ALGORITHM = "ACS3-HMAC-SHA256"
# The gateway accepts a request whose timestamp is at most this far from its own clock;
# the same window bounds how long a nonce has to be remembered.
TIMESTAMP_TOLERANCE_SECONDS = 15 * 60
V3_REQUIRED_SIGNED_HEADERS = ("host", "x-acs-action", "x-acs-date", "x-acs-signature-nonce")
# Query parameters of a V1 request that carry the protocol, not the operation.
V1_PROTOCOL_PARAMETERS = frozenset(
    {
        "Action",
        "Version",
        "Format",
        "Timestamp",
        "SignatureNonce",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureType",
        "AccessKeyId",
        "Signature",
        "SecurityToken",
    }
)

_AUTHORIZATION = re.compile(
    r"^ACS3-HMAC-SHA256\s+Credential=(?P<ak>[^,\s]+)\s*,\s*SignedHeaders=(?P<headers>[^,\s]+)"
    r"\s*,\s*Signature=(?P<signature>[0-9a-fA-F]+)\s*$"
)
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def percent_encode(text: str) -> str:
    """RFC 3986 encoding as Alibaba Cloud signs it: only ``A-Za-z0-9-_.~`` stay as they are."""
    return quote(text, safe="~")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def v3_canonical_query(params: Mapping[str, str], *, encode_keys: bool) -> str:
    # The Python SDK leaves keys unencoded; the published V3 algorithm encodes them.
    # They differ only for keys with reserved characters (e.g. an odd option key).
    def key_text(key: str) -> str:
        return percent_encode(key) if encode_keys else key

    return "&".join(f"{key_text(key)}={percent_encode(params[key])}" for key in sorted(params))


def v3_canonical_headers(headers: Mapping[str, Iterable[str]], signed_headers: list[str]) -> str:
    return "".join(
        f"{name}:{','.join(sorted(value.strip() for value in headers[name]))}\n" for name in signed_headers
    )


def v3_string_to_sign(
    *,
    method: str,
    path: str,
    params: Mapping[str, str],
    headers: Mapping[str, Iterable[str]],
    signed_headers: list[str],
    hashed_payload: str,
    encode_keys: bool = False,
) -> str:
    canonical_request = "\n".join(
        (
            method,
            path or "/",
            v3_canonical_query(params, encode_keys=encode_keys),
            v3_canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            hashed_payload,
        )
    )
    return f"{V3_ALGORITHM}\n{sha256_hex(canonical_request.encode())}"


def v3_signature(secret: str, string_to_sign: str) -> str:
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def v1_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    canonical = "&".join(
        f"{percent_encode(key)}={percent_encode(params[key])}" for key in sorted(params) if key != "Signature"
    )
    return f"{method}&%2F&{percent_encode(canonical)}"


def v1_signature(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def format_timestamp(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime(_TIMESTAMP_FORMAT)


@dataclass(frozen=True)
class Credential:
    access_key_id: str
    access_key_secret: str = field(repr=False)
    # Set for STS credentials: requests signed with this key must present the same token.
    security_token: str | None = field(default=None, repr=False)
    account_id: str = ""  # whose caches the key reaches (for STS keys: the role's account)
    active: bool = True  # False: disabled, answered with InvalidAccessKeyId.Inactive
    expires_at: float | None = None  # STS keys: the moment (virtual clock) the token expires


@dataclass(frozen=True)
class Caller:
    access_key_id: str
    scheme: str  # "V3" or "V1"
    account_id: str = ""
    credential: Credential | None = None


class NonceRegistry:
    """Remembers nonces for as long as their timestamps are acceptable, then forgets them."""

    def __init__(self, window_seconds: float = TIMESTAMP_TOLERANCE_SECONDS) -> None:
        self._window = window_seconds
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def use(self, access_key_id: str, nonce: str, now: float) -> bool:
        """Record a nonce; False when it was already used within the window."""
        while self._seen:
            oldest_key, seen_at = next(iter(self._seen.items()))
            if now - seen_at <= self._window:
                break
            del self._seen[oldest_key]
        key = (access_key_id, nonce)
        if key in self._seen:
            return False
        self._seen[key] = now
        return True

    def clear(self) -> None:
        self._seen.clear()


def _incomplete(detail: str) -> ApiError:
    return ApiError(
        400, "IncompleteSignature", f"The request signature does not conform to Aliyun standards. {detail}"
    )


def _mismatch(string_to_sign: str) -> ApiError:
    """The gateway's words: clients cut the message after ``server string to sign is:`` and
    compare the rest with the string they signed (equal: a wrong secret; not: an encoding bug)."""
    return ApiError(
        400,
        "SignatureDoesNotMatch",
        f"Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}",
    )


class Authenticator:
    """Verifies V3 and V1 signatures against the known key pairs.

    `credentials` is either the key pairs themselves or a function finding one by its id (the
    account registry, whose keys change at run time). Timestamps are judged by the wall clock
    (clients sign with theirs); STS expiry by `expiry_clock`, the emulator's virtual clock.
    """

    def __init__(
        self,
        credentials: Iterable[Credential] | Callable[[str], Credential | None],
        *,
        wall_clock: Callable[[], float] = time.time,
        expiry_clock: Callable[[], float] | None = None,
    ) -> None:
        if callable(credentials):
            self._find = credentials
        else:
            known = {credential.access_key_id: credential for credential in credentials}
            self._find = known.get
        self._wall_clock = wall_clock
        self._expiry_clock = expiry_clock or wall_clock
        self.nonces = NonceRegistry()

    def verify(
        self,
        *,
        method: str,
        path: str,
        params: Mapping[str, str],
        headers: Mapping[str, Iterable[str]],
        body: bytes,
    ) -> Caller:
        """Return who signed the request, or raise the `ApiError` the gateway would answer.

        `headers` maps lower-case names to all values received; `params` holds every
        decoded query (and form) parameter.
        """
        authorization = _first(headers, "authorization")
        if authorization is not None and authorization.startswith(V3_ALGORITHM):
            return self._verify_v3(method, path, params, headers, body, authorization)
        if "Signature" in params:
            return self._verify_v1(method, params)
        raise _incomplete("The request carries neither an ACS3-HMAC-SHA256 Authorization nor a Signature.")

    def _verify_v3(self, method, path, params, headers, body, authorization: str) -> Caller:
        match = _AUTHORIZATION.match(authorization)
        if match is None:
            raise _incomplete("The Authorization header is malformed.")
        credential = self._credential(match["ak"])
        signed_headers = match["headers"].split(";")
        missing = [name for name in V3_REQUIRED_SIGNED_HEADERS if name not in signed_headers]
        if missing:
            raise _incomplete(f"SignedHeaders must include {', '.join(missing)}.")
        absent = [name for name in signed_headers if name not in headers]
        if absent:
            raise _incomplete(f"Signed headers are missing from the request: {', '.join(absent)}.")
        # The server hashes the body it received: a body other than the one the client
        # hashed (x-acs-content-sha256) gives another string to sign, hence a mismatch.
        hashed_payload = sha256_hex(body)
        body_matches = _first(headers, "x-acs-content-sha256") == hashed_payload
        self._check_timestamp(_first(headers, "x-acs-date"))
        # The SDK's form first (unencoded keys), then the published one where they differ.
        variants = (False, True) if any(percent_encode(key) != key for key in params) else (False,)
        strings_to_sign = [
            v3_string_to_sign(
                method=method,
                path=path,
                params=params,
                headers=headers,
                signed_headers=signed_headers,
                hashed_payload=hashed_payload,
                encode_keys=encode_keys,
            )
            for encode_keys in variants
        ]
        signature = match["signature"].lower()
        if not body_matches or not any(
            hmac.compare_digest(v3_signature(credential.access_key_secret, text), signature)
            for text in strings_to_sign
        ):
            # A hash of the request only: echoing it leaks nothing.
            raise _mismatch(strings_to_sign[0])
        self._check_token(credential, _first(headers, "x-acs-security-token"))
        self._check_nonce(credential, _first(headers, "x-acs-signature-nonce") or "")
        return Caller(credential.access_key_id, "V3", credential.account_id, credential)

    def _verify_v1(self, method: str, params: Mapping[str, str]) -> Caller:
        for name in ("AccessKeyId", "SignatureNonce", "Timestamp"):
            if not params.get(name):
                raise _incomplete(f"The parameter {name} is missing.")
        if params.get("SignatureMethod", "HMAC-SHA1") != "HMAC-SHA1":
            raise _incomplete("Only SignatureMethod HMAC-SHA1 is supported.")
        credential = self._credential(params["AccessKeyId"])
        self._check_timestamp(params["Timestamp"])
        string_to_sign = v1_string_to_sign(method, params)
        expected = v1_signature(credential.access_key_secret, string_to_sign)
        if not hmac.compare_digest(expected, params["Signature"]):
            # Unlike V3's (a hash), the V1 string holds the parameter values, tokens and option
            # values included: the gateway echoes them to the caller that sent them, and so do
            # we. Whoever logs the message must cut it (the operator's cloud layer does).
            raise _mismatch(string_to_sign)
        self._check_token(credential, params.get("SecurityToken"))
        self._check_nonce(credential, params["SignatureNonce"])
        return Caller(credential.access_key_id, "V1", credential.account_id, credential)

    def _credential(self, access_key_id: str) -> Credential:
        credential = self._find(access_key_id)
        if credential is None:
            raise ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if not credential.active:
            # Checked before the signature: the gateway looks the key up first.
            raise ApiError(400, "InvalidAccessKeyId.Inactive", "Specified access key is disabled.")
        return credential

    def _check_timestamp(self, value: str | None) -> None:
        if not value:
            raise _incomplete("The request timestamp is missing.")
        try:
            stamp = datetime.strptime(value, _TIMESTAMP_FORMAT).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise ApiError(
                400,
                "InvalidTimeStamp.Format",
                f"Specified time stamp or date value {value!r} is not well formatted.",
            ) from None
        if abs(self._wall_clock() - stamp) > TIMESTAMP_TOLERANCE_SECONDS:
            raise ApiError(
                400,
                "InvalidTimeStamp.Expired",
                f"Specified time stamp or date value is expired. Request time {value}.",
            )

    def _check_token(self, credential: Credential, token: str | None) -> None:
        if credential.security_token is None:
            if token:
                raise ApiError(
                    400,
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "The security token does not belong to this access key.",
                )
            return
        if not token:
            raise ApiError(
                400,
                "InvalidSecurityToken.Malformed",
                "This access key is a temporary (STS) key; the request must carry its security token.",
            )
        if not hmac.compare_digest(token, credential.security_token):
            raise ApiError(
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "The security token does not belong to this access key.",
            )
        if credential.expires_at is not None and self._expiry_clock() >= credential.expires_at:
            raise ApiError(400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")

    def _check_nonce(self, credential: Credential, nonce: str) -> None:
        if not nonce:
            raise _incomplete("The signature nonce is missing.")
        if not self.nonces.use(credential.access_key_id, nonce, self._wall_clock()):
            raise ApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")


def _first(headers: Mapping[str, Iterable[str]], name: str) -> str | None:
    values = headers.get(name)
    if not values:
        return None
    return next(iter(values))
