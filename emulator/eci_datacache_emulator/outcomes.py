"""How a load ends: the documented built-in failure rules and the admin's per-cache rules.

Built-in rules, judged from the data source when it is given (Create, or Update with a new
source) and applied when loading finishes. Only non-secret option values are looked at.

1. No ``DataSource.Type``: Failed, "No data source was specified".
2. A required option missing: ``url`` or ``repoId`` for URL, ``server`` for NAS, ``bucket``
   for OSS, ``snapshotId`` for SNAPSHOT; an unknown ``repoSource``: Failed.
3. Any option value containing ``fail`` (any case): Failed, the source answered with an error.
4. Any option value containing ``unreachable``, or a host ending in ``.invalid``: Failed,
   the network is unreachable.
5. Data size larger than ``Size``: Failed (UpdateFailed for an update), with both sizes in
   the message. The data size is the first ``<N>GiB`` / ``<N>GB`` in an option value
   (``url=https://example.com/llama-30gib.tar`` is 30 GiB); without one it is 1-16 GiB, taken
   from a hash of the source, so the default and minimum ``Size`` of 20 always fits.

A copy gets the data of its Available source, so only admin rules can make it fail.

Admin rules (``POST /_emulator/rules``) are checked first, in the order they were added,
when a create, update or copy finishes loading: ``fail`` forces a failure with the rule's
message, ``succeed`` overrides the built-in rules, ``stall`` keeps the cache loading until
the rule is removed. A rule matches on any of ``dataCacheId``, ``name``, ``path``,
``bucket`` and ``regionId`` (all given must match), optionally only for some
``operations`` (``create``/``update``/``copy``) and only ``times`` times.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .wire import is_secret_option

OUTCOMES = ("fail", "succeed", "stall")
OPERATIONS = ("create", "update", "copy")
MATCH_FIELDS = ("dataCacheId", "name", "path", "bucket", "regionId")
REPO_SOURCES = ("HuggingFace/Model", "HuggingFace/DataSet", "ModelScope/Model", "ModelScope/DataSet")
# Hash-derived sizes stay below 20 GiB, the smallest Size the emulator accepts.
_HASHED_SIZE_RANGE_GIB = 16
_SIZE_IN_VALUE = re.compile(r"(\d+)\s*gi?b(?![a-z])", re.IGNORECASE)


@dataclass(frozen=True)
class SourceAssessment:
    """What loading this source will meet, decided once from its options."""

    description: str
    data_size_gib: int
    failure: str | None = None


def assess_source(source_type: str | None, options: Mapping[str, str]) -> SourceAssessment:
    public = {key: value for key, value in options.items() if not is_secret_option(key)}
    description = describe_source(source_type, public)
    data_size = _data_size_gib(source_type, public)
    if source_type is None:
        return SourceAssessment("nothing", 0, "No data source was specified, there is nothing to load.")
    missing = _missing_option(source_type, public)
    if missing:
        return SourceAssessment(description, data_size, missing)
    for value in public.values():
        if "fail" in value.lower():
            return SourceAssessment(
                description,
                data_size,
                f"Failed to pull data from {description}: the source returned an error.",
            )
        host = _host_of(value)
        if "unreachable" in value.lower() or (host and host.endswith(".invalid")):
            return SourceAssessment(
                description,
                data_size,
                f"Failed to connect to {host or description}: network is unreachable. "
                "Check that the vSwitch has SNAT through a NAT gateway or an EIP.",
            )
    return SourceAssessment(description, data_size)


def size_failure(data_size_gib: int, size_gib: int) -> str | None:
    if data_size_gib <= size_gib:
        return None
    return (
        f"The data to cache ({data_size_gib} GiB) is larger than the cache size ({size_gib} GiB). "
        "Increase Size and try again."
    )


def describe_source(source_type: str | None, options: Mapping[str, str]) -> str:
    """A short, secret-free name of the source for event messages."""
    if source_type == "URL" and options.get("repoId"):
        return f"{options.get('repoSource', 'HuggingFace/Model')} {options['repoId']}"
    if source_type == "URL" and options.get("url"):
        return _without_credentials(options["url"])
    if source_type == "NAS":
        return f"nas://{options.get('server', '?')}{options.get('path', '/')}"
    if source_type == "OSS":
        return f"oss://{options.get('bucket', '?')}{options.get('path', '/')}"
    if source_type == "SNAPSHOT":
        return f"snapshot {options.get('snapshotId', '?')}"
    return f"{source_type or 'no'} source"


def _missing_option(source_type: str, options: Mapping[str, str]) -> str | None:
    if source_type == "URL":
        if not (options.get("url") or options.get("repoId")):
            return "A URL data source needs the option url or repoId."
        if options.get("repoId") and options.get("repoSource", REPO_SOURCES[0]) not in REPO_SOURCES:
            return f"Unknown repoSource {options['repoSource']!r}; use one of {', '.join(REPO_SOURCES)}."
        return None
    required = {"NAS": "server", "OSS": "bucket", "SNAPSHOT": "snapshotId"}[source_type]
    if not options.get(required):
        return f"A {source_type} data source needs the option {required}."
    return None


def _data_size_gib(source_type: str | None, options: Mapping[str, str]) -> int:
    for value in options.values():
        match = _SIZE_IN_VALUE.search(value)
        if match:
            return max(1, int(match.group(1)))
    digest = hashlib.sha256(json.dumps([source_type, sorted(options.items())]).encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % _HASHED_SIZE_RANGE_GIB


def _host_of(value: str) -> str | None:
    if "://" not in value:
        return value if re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]+", value) else None
    try:
        return urlsplit(value).hostname
    except ValueError:
        return None


def _without_credentials(url: str) -> str:
    # Event messages must not leak a token hidden in user:password@ or in the query string.
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the given URL"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else url.split("?")[0]


@dataclass
class Rule:
    rule_id: str
    outcome: str
    match: dict[str, str]
    message: str | None = None
    operations: list[str] | None = None
    remaining: int | None = None

    def matches(self, cache_fields: Mapping[str, str | None], operation: str) -> bool:
        if self.operations is not None and operation not in self.operations:
            return False
        return all(cache_fields.get(key) == value for key, value in self.match.items())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "outcome": self.outcome,
            "match": dict(self.match),
            "message": self.message,
            "operations": self.operations,
            "times": self.remaining,
        }


@dataclass(frozen=True)
class Outcome:
    kind: str  # "succeed", "fail" or "stall"
    message: str | None = None


class RuleBook:
    """Admin overrides of how loads end, consulted before the built-in rules."""

    def __init__(self) -> None:
        self._rules: list[Rule] = []
        self._ids = itertools.count(1)

    def add(self, body: Mapping[str, Any]) -> Rule:
        match = body.get("match")
        if not isinstance(match, dict) or not match:
            raise ValueError(f"'match' must be an object with some of {', '.join(MATCH_FIELDS)}")
        unknown = set(match) - set(MATCH_FIELDS)
        if unknown:
            raise ValueError(f"unknown match fields {sorted(unknown)}; use {', '.join(MATCH_FIELDS)}")
        if not all(isinstance(value, str) for value in match.values()):
            raise ValueError("match values must be strings")
        outcome = body.get("outcome", "fail")
        if outcome not in OUTCOMES:
            raise ValueError(f"'outcome' must be one of {', '.join(OUTCOMES)}")
        operations = body.get("operations")
        if operations is not None and (
            not isinstance(operations, list) or not set(operations) <= set(OPERATIONS)
        ):
            raise ValueError(f"'operations' must be a list of {', '.join(OPERATIONS)}")
        times = body.get("times")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError("'times' must be a positive integer")
        message = body.get("message")
        if message is not None and not isinstance(message, str):
            raise ValueError("'message' must be a string")
        rule = Rule(f"rule-{next(self._ids)}", outcome, dict(match), message, operations, times)
        self._rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        before = len(self._rules)
        self._rules = [rule for rule in self._rules if rule.rule_id != rule_id]
        return len(self._rules) != before

    def clear(self) -> None:
        self._rules.clear()

    def list(self) -> list[Rule]:
        return list(self._rules)

    def decide(self, cache_fields: Mapping[str, str | None], operation: str) -> Outcome | None:
        for rule in self._rules:
            if not rule.matches(cache_fields, operation):
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)
            default_message = f"Loading failed (emulator rule {rule.rule_id})."
            return Outcome(
                rule.outcome, rule.message or (default_message if rule.outcome == "fail" else None)
            )
        return None
