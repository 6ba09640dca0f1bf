"""A DataCache's revisions beside its current cache (`updatePolicy: Replace`): the one being
built after a change of the data source or size, its taking over once Available, and the
superseded ones deleted once no pod uses them. The decisions are `reconcile.revisions`'s and
`reconcile.datacache`'s (each revision is one cloud resource of the generic sync).

The object's own status fields (dataCacheId, path, status, ...) are the current revision's, as
pods and replications read them; `status.revisions` holds one entry per revision, the current
one's mirroring those fields, the others' being their own record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from datacache_operator.api.common import OWNER_UID_TAG
from datacache_operator.api.datacache import DataCacheSpec, RevisionStatus
from datacache_operator.cloud.client import CloudClient
from datacache_operator.cloud.errors import EciError
from datacache_operator.cloud.models import STATUS_AVAILABLE, ObservedCache
from datacache_operator.controllers.sync import ResourceManager, remove
from datacache_operator.reconcile.common import ConditionValue, Event, reason_from_code
from datacache_operator.reconcile.datacache import DesiredCache, Step
from datacache_operator.reconcile.ownership import made_by
from datacache_operator.reconcile.revisions import (
    Revisions,
    number,
    revision_path,
    source_key,
    source_summary,
    to_delete,
)

REVISION_FAILED = "RevisionFailed"
MAX_REVISIONS = 15  # status.revisions holds 16 at most: the current one, a new one, superseded ones
# The fields of the object's status that are its current revision's (moved on a takeover).
CURRENT_FIELDS = (
    "dataCacheId",
    "status",
    "bucket",
    "path",
    "size",
    "progress",
    "creationTime",
    "expireTime",
    "message",
    "retentionDays",
    "cacheGeneration",
)
ENTRY_FIELDS = frozenset(
    RevisionStatus.model_fields[name].alias or name for name in RevisionStatus.model_fields
)
SERVING = frozenset({STATUS_AVAILABLE, "Updating", "UpdateFailed"})

# (namespace, cache, region) -> the pods bound to each cloud cache id of it
RevisionUsers = Callable[[str, str, str], Awaitable[dict[str, list[str]]]]


async def nobody_by_id(namespace: str, cache: str, region: str) -> dict[str, list[str]]:
    return {}


def serving(status: Mapping[str, Any]) -> bool:
    """Whether the current revision has a cache pods can use (or could, between updates):
    only then is a new source built beside it rather than into it."""
    return bool(status.get("dataCacheId")) and status.get("status") in SERVING


def _options(spec: DataCacheSpec, commit: str | None) -> dict[str, str]:
    options = dict(spec.data_source.options) if spec.data_source else {}
    return {**options, "revision": commit} if commit else options


# Options that are credentials, not what is loaded: a new token is not a new revision.
CREDENTIAL_OPTIONS = frozenset({"accessToken", "akId", "akSecret"})


def revision_key(spec: DataCacheSpec, options: Mapping[str, str]) -> str:
    """What a revision is built from, as a digest: the source's options as sent (the Secret's
    included, the commit a hub branch was pinned to; credentials left out) and the size."""
    source = spec.data_source
    loaded = {k: v for k, v in options.items() if k not in CREDENTIAL_OPTIONS}
    return source_key(str(source.type) if source else None, loaded, spec.size)


def revision_summary(spec: DataCacheSpec, commit: str | None = None) -> str:
    source = spec.data_source
    shown = source_summary(str(source.type) if source else None, _options(spec, commit))
    requested = (source.options.get("revision") if source else None) or "the default branch"
    return f"{shown} (from {requested})" if commit else shown


def entry_of(observed: ObservedCache) -> dict[str, Any]:
    """What a revision's entry shows of its cache as ECI reports it."""
    shown = RevisionStatus(
        name="-",
        data_cache_id=observed.data_cache_id,
        status=observed.status,
        bucket=observed.bucket,
        path=observed.path,
        size=observed.size,
        creation_time=observed.creation_time.replace(microsecond=0) if observed.creation_time else None,
        expire_time=observed.expire_time.replace(microsecond=0) if observed.expire_time else None,
        message=observed.last_event_message,
    ).to_patch()
    del shown["name"]
    return shown


@dataclass
class RevisionOutcome:
    """What the revisions beside the current one add to the pass."""

    conditions: list[ConditionValue] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    busy: bool = False  # a revision is being built or deleted: poll at the loading interval
    took_over: str | None = None  # the revision that became current in this pass
    error: EciError | None = None  # a retryable error building one: back off


ManagerFactory = Callable[[DesiredCache, dict[str, Any], str], ResourceManager[Step]]
Syncer = Callable[[ResourceManager[Step]], Awaitable[tuple[Step, ObservedCache | None]]]


@dataclass
class RevisionPass:
    """One pass over the revisions of one DataCache (its current one already synced)."""

    cloud: CloudClient
    spec: DataCacheSpec
    meta: Mapping[str, Any]
    status: dict[str, Any]
    desired: DesiredCache  # at spec.path: each revision has its own
    key: str  # `revision_key` of the spec (and pinned commit): what the current one must match
    summary: str  # `revision_summary`: what a new revision is built from
    stored_current: str | None  # the current revision as the apiserver holds it
    cluster: str
    manager_for: ManagerFactory  # a CacheManager for a revision's entry
    sync: Syncer
    users_by_id: RevisionUsers
    error_text: Callable[[EciError], str]
    outcome: RevisionOutcome = field(default_factory=RevisionOutcome)

    def entries(self) -> dict[str, dict[str, Any]]:
        found = {e["name"]: dict(e) for e in self.status.get("revisions") or [] if number(e.get("name", ""))}
        return found

    async def run(self) -> RevisionOutcome:
        status, spec = self.status, self.spec
        entries = self.entries()
        current = str(status["currentRevision"])
        key = self.key
        mirror = entries.setdefault(current, {"name": current})
        if "sourceKey" not in mirror:  # built before revisions were kept: from the spec as it is
            mirror.update(sourceKey=key, source=self.summary)
        revisions = Revisions.of(current, entries)
        building = revisions.building
        if (
            building is None
            and serving(status)
            and mirror["sourceKey"] != key
            and len(entries) >= MAX_REVISIONS
        ):
            self._failed(
                "(new)",
                f"{len(entries)} revisions are held, still used by pods; none is built until one goes.",
                "TooManyRevisions",
            )
        elif building is None and serving(status) and mirror["sourceKey"] != key:
            building = revisions.next_name(entries)
            path = revision_path(spec.path, building)
            entries[building] = {"name": building, "path": path, "sourceKey": key, "source": self.summary}
            self.outcome.events.append(
                Event(
                    "Normal",
                    "BuildingRevision",
                    f"Building revision {building} at {path} from {self.summary}; {current} serves meanwhile.",
                )
            )
        if building is not None:
            if mirror["sourceKey"] == key and entries[building].get("sourceKey") != key:
                await self._drop(building, entries, "the spec went back to the current revision's source")
            else:
                await self._build(building, entries, key)
        current = str(status["currentRevision"])
        self._mirror(entries.setdefault(current, {"name": current}))
        await self._collect(Revisions.of(current, entries).superseded, entries)
        status["revisions"] = [
            {k: v for k, v in entries[name].items() if k in ENTRY_FIELDS}
            for name in sorted(entries, key=number)
        ]
        return self.outcome

    def _mirror(self, entry: dict[str, Any]) -> None:
        for name in CURRENT_FIELDS:
            entry[name] = self.status.get(name)
        entry["consumers"] = self.status.get("consumers")

    async def _build(self, name: str, entries: dict[str, dict[str, Any]], key: str) -> None:
        entry = entries[name]
        generation = self.meta.get("generation") or 0
        if entry.get("failedGeneration") == generation and not entry.get("dataCacheId"):
            self._failed(
                name, entry.get("message") or "its create was refused", entry.get("reason") or "Failed"
            )
            return  # a call refused for this very spec: not sent again until the spec changes
        desired = dataclasses.replace(self.desired, path=str(entry["path"]))
        manager = self.manager_for(desired, entry, name)
        created_before = entry.get("cacheGeneration") or 0
        try:
            step, observed = await self.sync(manager)
        except EciError as error:
            self._tell(name, manager.events)
            reason, message = reason_from_code(error.code), self.error_text(error)
            if error.retryable:
                self.outcome.error = error
            else:
                entry.update(failedGeneration=generation, message=message, reason=reason)
                self.outcome.events.append(Event("Warning", REVISION_FAILED, f"Revision {name}: {message}"))
            self._failed(name, message, reason)
            return
        self._tell(name, manager.events)
        if observed is not None:
            entry.update(entry_of(observed))
        if (entry.get("cacheGeneration") or 0) > created_before or getattr(manager, "rebuilt", False):
            entry.update(sourceKey=key, source=self.summary, failedGeneration=None)
        if step == Step.FAILED:  # its Warning event came from the sync, once
            if entry.get("failedGeneration") is None:
                entry["failedGeneration"] = generation
            self._failed(name, entry.get("message") or "The build failed.", entry.get("status") or "Failed")
            return
        if step == Step.READY and entry.get("sourceKey") == key:
            self._take_over(name, entries, observed)
            return
        self.outcome.busy = True
        self._clear_failure(f"Revision {name} is being built.")

    def _tell(self, name: str, events: list[Event]) -> None:
        """A revision's own events, saying which revision (the current one's need not)."""
        self.outcome.events += [Event(e.type, e.reason, f"Revision {name}: {e.message}") for e in events]

    def _failed(self, name: str, message: str, reason: str) -> None:
        current = self.status["currentRevision"]
        self.outcome.conditions.append(
            ConditionValue(
                REVISION_FAILED, "True", reason, f"Revision {name}: {message} {current} keeps serving."
            )
        )

    def _clear_failure(self, message: str) -> None:
        shown = any(c.get("type") == REVISION_FAILED for c in self.status.get("conditions") or [])
        if shown:
            self.outcome.conditions.append(ConditionValue(REVISION_FAILED, "False", "NoFailure", message))

    def _take_over(
        self, name: str, entries: dict[str, dict[str, Any]], observed: ObservedCache | None
    ) -> None:
        """The new revision becomes current in this status write: new pods get it from now on."""
        status, entry = self.status, entries[name]
        self._mirror(entries[str(status["currentRevision"])])  # the old current's fields, kept
        for field_name in CURRENT_FIELDS:
            status[field_name] = entry.get(field_name)
        status.update(currentRevision=name, progress=observed.progress if observed else None)
        self.outcome.took_over = name
        self.outcome.events.append(
            Event(
                "Normal",
                "RevisionCurrent",
                f"Revision {name} ({entry.get('dataCacheId')}) is current; new pods get it.",
            )
        )
        self._clear_failure(f"Revision {name} is current.")

    async def _drop(self, name: str, entries: dict[str, dict[str, Any]], why: str) -> None:
        if await self._delete(name, entries[name]):
            del entries[name]
            self.outcome.events.append(Event("Normal", "RevisionDropped", f"Revision {name} dropped: {why}."))
        else:
            self.outcome.busy = True

    async def _collect(self, superseded: tuple[str, ...], entries: dict[str, dict[str, Any]]) -> None:
        """Superseded revisions: their consumers, and the deletion of the unused ones beyond the
        history limit (never of one a pod uses)."""
        if not superseded:
            return
        users = await self.users_by_id(self.meta["namespace"], self.meta["name"], self.desired.region)
        in_use: dict[str, bool] = {}
        for name in superseded:
            cache_id = entries[name].get("dataCacheId")
            count = len(users.get(cache_id, [])) if cache_id else 0
            entries[name]["consumers"] = count
            in_use[name] = count > 0
        stored = number(self.stored_current or "")
        for name in to_delete(superseded, in_use, self.spec.history_limit):
            if number(name) >= stored:
                self.outcome.busy = True  # retired in this pass: the webhook may still bind to it
                continue
            entry = entries[name]
            if str(self.spec.deletion_policy or "Delete") == "Retain":
                del entries[name]
                left = f"data cache {entry.get('dataCacheId')}" if entry.get("dataCacheId") else "nothing"
                self.outcome.events.append(
                    Event(
                        "Normal",
                        "Retained",
                        f"Revision {name} superseded; deletionPolicy Retain: {left} left.",
                    )
                )
                continue
            if await self._delete(name, entry):
                del entries[name]
                self.outcome.events.append(
                    Event("Normal", "RevisionDeleted", f"Superseded revision {name} is gone; no pod used it.")
                )
            else:
                self.outcome.busy = True

    async def _delete(self, name: str, entry: dict[str, Any]) -> bool:
        """Delete a revision's cache (only one this namespace made); True once it is gone."""
        cache_id = entry.get("dataCacheId")
        namespace, region = self.meta["namespace"], self.desired.region
        try:
            if cache_id:
                ids = [str(cache_id)]
            else:  # a create whose reply was lost: found at its address by the owner tag
                bucket, path = str(entry.get("bucket") or self.desired.bucket), str(entry.get("path") or "")
                found = await self.cloud.find_at(region, bucket, path) if path else []
                ids = [c.data_cache_id for c in found if c.tags.get(OWNER_UID_TAG) == self.meta["uid"]]
            if not ids:
                return True
            removal = await remove(
                self.cloud,
                region,
                ids,
                None,
                made_by(self.cluster, namespace),
            )
        except EciError as error:
            if error.retryable:
                self.outcome.error = error
            else:  # kept, and tried again next pass
                message = f"Deleting revision {name}: {self.error_text(error)}"
                self.outcome.events.append(Event("Warning", reason_from_code(error.code), message))
            return False
        if removal.refused:
            return True  # not this namespace's: left alone, and no longer held
        if removal.pending:
            entry["status"] = "Deleting"
        return not removal.pending
