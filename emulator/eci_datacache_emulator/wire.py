"""Reading the flattened RPC parameters the SDK sends, and keeping secrets out of echoes.

The SDK flattens nested request fields into dotted query keys:
objects become ``Parent.Key`` (``DataSource.Options.url``, ``EipCreateParam.ISP``), lists
become 1-based ``Parent.N`` (``DataCacheId.1``, ``Tag.1.Key``), and integers travel as text.
Option keys may also carry the OpenAPI-portal length prefix ``#N#key``, which is stripped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import invalid_parameter, missing_parameter

REDACTED = "******"
# Account parameters every POP API accepts; the emulator takes the account from the key and ignores them.
ACCOUNT_PARAMETERS = frozenset({"OwnerId", "OwnerAccount", "ResourceOwnerId", "ResourceOwnerAccount"})
OPTIONS_PREFIX = "DataSource.Options."
_LENGTH_PREFIX = re.compile(r"^#(\d+)#(.+)$")
_SECRET_KEY_WORDS = ("token", "secret", "password", "passwd", "akid", "accesskey", "credential", "apikey")
_SECRET_PARAMETERS = frozenset({"Signature", "AccessKeyId", "SecurityToken"})


def strip_length_prefix(key: str) -> str:
    """``#10#repoSource`` -> ``repoSource``.

    The number is the key's length in the OpenAPI portal's notation; the documentation's own
    example gets it wrong (``#10#url``), so a wrong number is accepted, not rejected.
    """
    match = _LENGTH_PREFIX.match(key)
    return match.group(2) if match else key


def is_secret_option(key: str) -> bool:
    """Whether an option key names a credential (``accessToken``, ``akId``, ``akSecret``...)."""
    folded = re.sub(r"[^a-z]", "", strip_length_prefix(key).lower())
    return any(word in folded for word in _SECRET_KEY_WORDS)


def redact_options(options: Mapping[str, str]) -> dict[str, str]:
    return {key: (REDACTED if is_secret_option(key) else value) for key, value in options.items()}


def redact_parameters(params: Mapping[str, str]) -> dict[str, str]:
    """Parameters as they may be logged: secret options and credentials masked."""
    redacted = {}
    for key, value in params.items():
        if key in _SECRET_PARAMETERS or (
            key.startswith(OPTIONS_PREFIX) and is_secret_option(key[len(OPTIONS_PREFIX) :])
        ):
            redacted[key] = REDACTED
        else:
            redacted[key] = value
    return redacted


class Parameters:
    """Typed access to one request's flattened business parameters."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = {key: value for key, value in raw.items() if key not in ACCOUNT_PARAMETERS}

    def __contains__(self, name: str) -> bool:
        return name in self.raw

    def text(self, name: str, *, required: bool = False, max_length: int | None = None) -> str | None:
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise missing_parameter(name)
            return None
        if max_length is not None and len(value) > max_length:
            raise invalid_parameter(name, f"It must be at most {max_length} characters long.")
        return value

    def integer(self, name: str, *, minimum: int, maximum: int) -> int | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise invalid_parameter(name, "It must be an integer.") from None
        if not minimum <= number <= maximum:
            raise invalid_parameter(name, f"It must be between {minimum} and {maximum}.")
        return number

    def indexed(self, prefix: str) -> dict[int, dict[str, str]]:
        """``Tag.2.Key=a`` -> ``{2: {"Key": "a"}}``; ``DataCacheId.1=x`` -> ``{1: {"": "x"}}``."""
        items: dict[int, dict[str, str]] = {}
        start = f"{prefix}."
        for key, value in self.raw.items():
            if not key.startswith(start):
                continue
            index_text, _, field = key[len(start) :].partition(".")
            if not index_text.isdigit() or int(index_text) < 1:
                raise invalid_parameter(key, "List indexes start at 1.")
            items.setdefault(int(index_text), {})[field] = value
        return dict(sorted(items.items()))

    def text_list(self, prefix: str) -> list[str]:
        return [fields[""] for fields in self.indexed(prefix).values() if fields.get("")]

    def tags(self, prefix: str = "Tag") -> list[tuple[str, str]]:
        tags: list[tuple[str, str]] = []
        for index, fields in self.indexed(prefix).items():
            key = fields.get("Key", "")
            if not key:
                raise invalid_parameter(f"{prefix}.{index}.Key", "A tag needs a key.")
            tags.append((key, fields.get("Value", "")))
        return tags

    def options(self) -> dict[str, str]:
        options: dict[str, str] = {}
        for key, value in self.raw.items():
            if key.startswith(OPTIONS_PREFIX):
                option = strip_length_prefix(key[len(OPTIONS_PREFIX) :])
                if not option:
                    raise invalid_parameter(key, "An option needs a key.")
                options[option] = value
        return options

    def object(self, prefix: str) -> dict[str, str]:
        start = f"{prefix}."
        return {key[len(start) :]: value for key, value in self.raw.items() if key.startswith(start)}

    def without(self, *names: str) -> dict[str, str]:
        return {key: value for key, value in self.raw.items() if key not in names}
