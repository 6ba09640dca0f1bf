"""Revisions of a DataCache (pure): which cache is current, when a new one is built beside
it, when it takes over, and which superseded ones go.

Under `updatePolicy: Replace` a change that makes ECI load the data again (the data source,
the size) builds a new revision at a path of its own while the current one keeps serving; once
the new one is Available it becomes current, in one status write, so new pods get it and no
pod is ever bound to a revision that is not Available. Revisions are numbered r1, r2, ...;
r1 lives at `spec.path` and rN at `spec.path` + ".rN". A revision numbered above the current one
is being built (at most one); those below it are superseded, and go once no pod uses them,
the newest `revisionHistoryLimit` unused ones kept.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

FIRST = "r1"
_NAME = re.compile(r"^r([1-9][0-9]*)$")
# Options that name what is loaded (never credentials): what a revision's `source` shows.
SHOWN_OPTIONS = ("repoSource", "repoId", "revision", "url", "bucket", "path", "server", "snapshotId")


def number(name: str) -> int:
    """r7 -> 7; anything else 0 (sorts before every revision)."""
    found = _NAME.match(name or "")
    return int(found.group(1)) if found else 0


def name_of(revision_number: int) -> str:
    return f"r{revision_number}"


def revision_path(spec_path: str, name: str) -> str:
    """Where a revision's cache lives: r1 at spec.path, rN beside it at spec.path + '.rN'."""
    return spec_path if name == FIRST else f"{spec_path.rstrip('/')}.{name}"


def source_key(source_type: str | None, options: Mapping[str, str], size: int) -> str:
    """What makes ECI load the data again, as a short digest: the source (its options as the
    spec writes them, never a Secret's values) and the size. Equal keys: the same revision."""
    canonical = json.dumps([source_type, dict(sorted(options.items())), size], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def source_summary(source_type: str | None, options: Mapping[str, str]) -> str:
    """A revision's source as people read it: its type and the options that say what it loads."""
    shown = [f"{key}={options[key]}" for key in SHOWN_OPTIONS if options.get(key)]
    return " ".join([source_type or "none", *shown])


@dataclass(frozen=True)
class Revisions:
    """The revisions an object holds, by number: the current one, the one being built (if
    any) and the superseded ones (newest first)."""

    current: str
    building: str | None
    superseded: tuple[str, ...]

    @classmethod
    def of(cls, current: str, names: Iterable[str]) -> Revisions:
        at = number(current)
        known = sorted({n for n in names if number(n)}, key=number)
        newer = [n for n in known if number(n) > at]
        return cls(
            current=current,
            building=newer[-1] if newer else None,
            superseded=tuple(reversed([n for n in known if number(n) < at])),
        )

    def next_name(self, names: Iterable[str]) -> str:
        return name_of(max([number(self.current), *(number(n) for n in names)]) + 1)


def to_delete(superseded: Sequence[str], in_use: Mapping[str, bool], history_limit: int) -> list[str]:
    """The superseded revisions (newest first) to delete: every unused one after the newest
    `history_limit` unused ones. One that a pod uses is never among them."""
    unused = [name for name in superseded if not in_use.get(name, True)]
    return unused[history_limit:]
