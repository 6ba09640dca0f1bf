"""One reconcile pass and one finalize pass of a DataCacheReplication: resolve the source,
ask the pure decisions in `reconcile.replication` what each destination needs, call
CopyDataCache / DescribeDataCaches / DeleteDataCache, compute the status.

Copies follow the source's current revision make-before-break (`reconcile.replication` says
where each revision's copy goes): when the source holds a new revision, a destination makes the
copy of it (its entry's `building`) while the entry keeps naming the old copy, which new pods of
the region are bound to; once the new copy is Available the entry switches to it in one status
write, and the old copy (kept in the entry's `previous`) is deleted, per deletionPolicy, once no
pod of the region is bound to its id. A new copy that fails leaves the old one serving, the
entry's reason RevisionCopyFailed and the object's RevisionFailed condition saying so.

What can still differ between regions: the source region switches when the source's new
revision is Available, each destination when its own copy of it is, which is later (a copy is
made only from an Available source, and takes its own time). A pod created in a destination
region between those moments gets the old copy there, as one created in a region whose copy
failed does; a pod is never bound to a copy that is not Available.

No kopf here: the handlers in `main.py` call these and post the returned events.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from datacache_operator import kube
from datacache_operator.api.binding import uses_label
from datacache_operator.api.common import DATACACHES, DESTINATION_REGION_TAG, OWNER_UID_TAG, is_paused
from datacache_operator.api.conditions import get_condition
from datacache_operator.api.replication import (
    CopyStatus,
    DataCacheReplicationSpec,
    DestinationStatus,
    ReplicationDestination,
)
from datacache_operator.api.replication import DataCacheReplicationStatus as ReplicationStatus
from datacache_operator.cloud import models as cloud_models
from datacache_operator.cloud.client import CloudClient
from datacache_operator.cloud.errors import EciError
from datacache_operator.cloud.models import STATUS_DELETING, ObservedCache
from datacache_operator.controllers.accounts import Accounts
from datacache_operator.controllers.base import (
    ACCOUNT_STALL_REASONS,
    AccountRefused,
    PassResult,
    PollingController,
    UsersLister,
    error_text,
)
from datacache_operator.controllers.pods import NOT_TERMINATED, PodLister
from datacache_operator.controllers.sync import CloudRecord, ResourceManager, remove
from datacache_operator.kube import NamespaceReader, ObjectReader
from datacache_operator.reconcile import common as decide_common
from datacache_operator.reconcile import replication as decide
from datacache_operator.reconcile.binding import in_use_message
from datacache_operator.reconcile.common import Event
from datacache_operator.reconcile.ownership import Identity, made_by, owner_of, path_in_use
from datacache_operator.reconcile.replication import DestinationSituation, DestStep, SourceState
from datacache_operator.reconcile.sync import CacheFields, Verb
from datacache_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

# Stalled reasons that the copies themselves give (they keep being watched), as opposed to a
# terminal error of a call, which is not repeated until the spec changes.
_COPY_STALL_REASONS = frozenset({"CopyFailed", "NotOwned"}) | ACCOUNT_STALL_REASONS

REVISION_FAILED = "RevisionFailed"  # the object's condition while a new revision's copy failed
BUILDING_REASON = "CopyingRevision"  # an entry's reason while its old copy serves and the new is made
BUILD_FAILED_REASON = "RevisionCopyFailed"  # ... and once the new one failed
# The entry's reasons while its copy is Available (a CopyAvailable event is told once).
_SERVING_REASONS = frozenset({"Available", BUILDING_REASON, BUILD_FAILED_REASON})
# The fields that describe one copy: what an entry takes from its new copy when it switches.
_COPY_KEYS = tuple(CopyStatus.alias(name) for name in CopyStatus.model_fields if name not in ("consumers",))
# What an entry keeps of a copy it no longer gives to new pods, until the copy is gone.
_PREVIOUS_KEYS = (
    "dataCacheId",
    "status",
    "bucket",
    "path",
    "revision",
    "sourceDataCacheId",
    "sourceRevision",
    "lastTransitionTime",
)

CopyUsers = Callable[[str, str, str, str], Awaitable[dict[str, list[str]]]]
"""(namespace, source DataCache name, region, replication name) -> the pods of the region bound
to each copy id of that replication: what keeps a superseded copy."""


def copy_users_of(list_pods: PodLister) -> CopyUsers:
    """A `CopyUsers` over a pod lister: the pods the webhook labelled as using the cache in the
    region (a server-side selector), by the copy id their bound record names."""

    async def by_id(namespace: str, cache: str, region: str, replication: str) -> dict[str, list[str]]:
        pods = await list_pods(namespace, f"{uses_label(cache)}={region}", NOT_TERMINATED)
        found: dict[str, list[str]] = {}
        for pod in pods:
            for cache_id in decide.copy_bound_ids(pod, cache, region, replication):
                found.setdefault(cache_id, []).append(f"{namespace}/{pod['metadata']['name']}")
        return found

    return by_id


def serving_stored(body: Mapping[str, Any]) -> frozenset[str]:
    """The copies the stored status gives to new pods (one per destination)."""
    entries = (body.get("status") or {}).get("destinations") or []
    return frozenset(str(e["dataCacheId"]) for e in entries if e.get("dataCacheId"))


def deletion_policy(spec: DataCacheReplicationSpec, settings: OperatorSettings) -> str:
    return str(spec.deletion_policy or settings.default_deletion_policy)


def copy_request(
    dest: ReplicationDestination, tags: Mapping[str, str], revision: str | None = None
) -> cloud_models.CopyRequest:
    """The copy of the source's `revision`: at the destination's path for it (unset: the
    source's own, which CopyDataCache defaults to)."""
    return cloud_models.CopyRequest(
        destination_region=dest.region,
        bucket=dest.bucket,
        path=decide.copy_path(dest.path, None, revision),
        name=dest.name,
        retention_days=dest.retention_days,
        tags=dict(tags),
        resource_group_id=dest.resource_group_id,
    )


@dataclass(frozen=True)
class _Target:
    """What one destination's copy should be in this pass."""

    destination: ReplicationDestination
    source: ObservedCache
    revision: str  # of the source, see `decide.source_revision`
    generation: int
    retry: bool  # a new reconcile request asks to try failed copies again
    revision_name: str | None = None  # the source DataCache's current revision (r1, r2, ...)
    held: frozenset[str] = frozenset()  # copies of this region a lookup by tags must not take


@dataclass
class _Outcome:
    """What one destination's pass came to."""

    step: DestStep  # of the copy its pods get
    busy: bool = False  # another copy is being made or deleted: poll at the loading interval
    retry: EciError | None = None  # a retryable error on another copy: back off
    failed_build: str | None = None  # why the new revision's copy failed (the old one serves)


def _set_cloud_status(entry: dict[str, Any], cloud_status: str | None, now: datetime) -> None:
    changed = entry.get("status") != cloud_status
    moved = CopyStatus(status=cloud_status)
    if changed:
        moved.last_transition_time = now.replace(microsecond=0)
    entry.update(moved.to_patch())


def _held_ids(entry: Mapping[str, Any]) -> list[str]:
    """Every copy a destination's entry holds: the one its pods get, the one being made, the
    previous ones not yet gone."""
    ids = [entry.get("dataCacheId"), (entry.get("building") or {}).get("dataCacheId")]
    ids += [old.get("dataCacheId") for old in entry.get("previous") or []]
    return [str(cache_id) for cache_id in ids if cache_id]


class ReplicationController(PollingController):
    def __init__(
        self,
        settings: OperatorSettings,
        cloud: CloudClient,
        read_object: ObjectReader,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        users: UsersLister | None = None,
        read_namespace: NamespaceReader = kube.read_namespace,
        accounts: Accounts | None = None,
        copy_users: CopyUsers | None = None,
    ) -> None:
        """`copy_users`: the pods bound to each copy id, which keep a superseded copy (by
        default listed from the apiserver as the pod binder lists them)."""
        super().__init__(settings, cloud, clock, rng, users, read_namespace, accounts)
        self.read_object = read_object
        self.copy_users = copy_users or copy_users_of(kube.list_pods)

    @staticmethod
    def _held_id(status: Mapping[str, Any]) -> str | None:
        """A copy the object holds (any region's): what stays in the account it was made in."""
        return next(
            (e["dataCacheId"] for e in status.get("destinations") or [] if e.get("dataCacheId")), None
        )

    async def _resolve_source(
        self, cloud: CloudClient, spec: DataCacheReplicationSpec, namespace: str
    ) -> tuple[SourceState, str | None, str | None, str, ObservedCache | None, str | None]:
        """(state, source id, source region, a label for messages, the source as read, the
        source DataCache's current revision)."""
        source = spec.source
        revision_name: str | None = None
        if source.data_cache_ref is not None:
            name = source.data_cache_ref.name
            label = f"DataCache {name}"
            obj = await self.read_object(DATACACHES, namespace, name)
            if obj is None:
                return SourceState.NOT_FOUND, None, None, label, None, None
            obj_status = obj.get("status") or {}
            known_id = obj_status.get("dataCacheId")
            revision_name = obj_status.get("currentRevision")  # written with dataCacheId, together
            region = (
                obj_status.get("region")
                or (obj.get("spec") or {}).get("region")
                or self.settings.default_region
            )
        else:
            known_id, region = source.data_cache_id, source.region
            label = f"data cache {known_id} in {region}"
        assert region is not None
        observed = await cloud.describe(region, known_id) if known_id else None
        if observed is not None:
            # Whoever wrote the id (the spec, or a status a tenant may have written), the cache
            # must be one this namespace may copy.
            owner = owner_of(observed.tags)
            if not await self.may_take(owner, namespace):
                refused = self.refusal(owner, f"The source ({label})")
                return SourceState.NOT_OWNED, known_id, region, refused, None, None
        state = decide.source_state(known_id, True, observed)
        return state, known_id, region, label, observed, revision_name

    async def reconcile(self, body: Mapping[str, Any]) -> PassResult:
        meta = body["metadata"]
        uid = meta["uid"]
        generation = meta.get("generation") or 0
        status = self.current_status(body)
        conditions = list(status.get("conditions") or [])
        now = self.clock()
        events: list[Event] = []
        spec = DataCacheReplicationSpec.model_validate(body.get("spec") or {})
        loading, stable = self.settings.poll_interval_loading, self.settings.poll_interval_stable

        def finish(values: list[decide_common.ConditionValue], delay: float) -> PassResult:
            return self._conclude(uid, status, values, generation, now, delay, events)

        if is_paused(meta):
            return finish(list(decide_common.PAUSED_CONDITIONS), stable)
        if self.stalled_by_a_terminal_error(meta, status, _COPY_STALL_REASONS):
            # A call refused for this very spec (permissions, a bad parameter): calling
            # again would fail the same way, until the spec changes or a reconcile request.
            return finish([], stable)

        picked = await self.cloud_for(meta["namespace"], status, self._held_id(status))
        if isinstance(picked, AccountRefused):
            return finish(self.account_conditions(picked), stable if picked.stalls else max(loading, 30.0))
        account, cloud = picked
        status.update(ReplicationStatus(account=account).to_patch())
        entries: dict[str, dict[str, Any]] = {
            entry["region"]: dict(entry) for entry in status.get("destinations") or [] if entry.get("region")
        }
        wanted = [d.region for d in spec.destinations]
        try:
            for region in decide.removed_regions(wanted, list(entries)):
                users = await self._copy_users(spec, meta, region)
                if users:  # kept, like a PVC in use, until the last pod ends
                    entries[region].update(reason="InUse", message=in_use_message(users, "the copy"))
                    continue
                policy = deletion_policy(spec, self.settings)
                if await self._remove(cloud, region, entries[region], policy, meta["namespace"], events):
                    del entries[region]
            state, source_id, source_region, label, source, revision_name = await self._resolve_source(
                cloud, spec, meta["namespace"]
            )
        except EciError as error:
            requested = self.pending_reconcile_request(meta, status)
            if requested is not None and not error.retryable:
                status.update(ReplicationStatus(last_handled_reconcile_at=requested).to_patch())  # tried once
            return self._retry_or_stall(uid, error, events, status, entries, finish, account)
        self._failures.pop(uid, None)
        status.update(
            ReplicationStatus(source_data_cache_id=source_id, source_region=source_region).to_patch()
        )

        steps: dict[str, DestStep] = {}
        if state == SourceState.READY:
            assert source is not None
            revision = decide.source_revision(source)
            status.update(ReplicationStatus(source_revision=revision).to_patch())
            requested = self.pending_reconcile_request(meta, status)
            retry = requested is not None
            retry_error: EciError | None = None
            busy = False
            failed_builds: dict[str, str] = {}
            for dest in spec.destinations:
                entry = entries.setdefault(dest.region, {"region": dest.region})
                refused = await self.bucket_refusal(dest.bucket or source.bucket, meta["namespace"])
                if refused is not None:  # the copy's pods could not mount it; nothing is sent
                    entry.update(
                        DestinationStatus(
                            region=dest.region, reason="BucketNotAllowed", message=f"The copy's {refused}."
                        ).to_patch()
                    )
                    steps[dest.region] = DestStep.FAILED
                    continue
                target = _Target(dest, source, revision, generation, retry, revision_name)
                try:
                    outcome = await self._destination(
                        cloud, target, spec, entry, meta, now, events, account, serving_stored(body)
                    )
                    steps[dest.region] = outcome.step
                    busy |= outcome.busy
                    retry_error = retry_error or outcome.retry
                    if outcome.failed_build:
                        failed_builds[dest.region] = outcome.failed_build
                except EciError as error:
                    code, message = decide_common.reason_from_code(error.code), error_text(error, account)
                    if error.retryable:
                        retry_error = retry_error or error
                        entry.update(
                            DestinationStatus(
                                region=dest.region, reason=code, message=f"{message} Retrying."
                            ).to_patch()
                        )
                        steps[dest.region] = DestStep.WAIT
                    else:
                        entry.update(
                            DestinationStatus(
                                region=dest.region, reason=code, message=message, failed_generation=generation
                            ).to_patch()
                        )
                        events.append(Event("Warning", code, f"Copy to {dest.region}: {message}"))
                        steps[dest.region] = DestStep.FAILED
            status["destinations"] = self._ordered(entries, wanted)
            status.update(ReplicationStatus(ready_destinations=decide.ready_count(steps)).to_patch())
            if retry_error is not None:
                return self._retry_or_stall(
                    uid, retry_error, events, status, entries, finish, account, keep=True
                )
            if retry:
                status.update(ReplicationStatus(last_handled_reconcile_at=requested).to_patch())
            values = decide.summary_conditions(steps) + self._revision_failed(conditions, failed_builds)
            previous_ready = get_condition(conditions, "Ready") or {}
            if values[0].status == "True" and previous_ready.get("status") != "True":
                events.append(Event("Normal", "Available", values[0].message))
            return finish(values, loading if busy else decide.poll_delay(state, steps, loading, stable))

        status["destinations"] = self._ordered(entries, wanted) or None
        status.update(ReplicationStatus(ready_destinations=f"0/{len(wanted)}").to_patch())
        previous_reason = (get_condition(conditions, "Ready") or {}).get("reason")
        values = decide.source_conditions(state, label)
        if previous_reason != str(state):
            kind = "Normal" if state == SourceState.NOT_READY else "Warning"
            events.append(Event(kind, str(state), values[0].message))
        return finish(values, decide.poll_delay(state, steps, loading, stable))

    @staticmethod
    def _revision_failed(
        conditions: list[dict[str, Any]], failed: Mapping[str, str]
    ) -> list[decide_common.ConditionValue]:
        """RevisionFailed while a new revision's copy failed somewhere (the old copies serve);
        False once none has, if it was shown."""
        if failed:
            message = " ".join(f"{region}: {why}" for region, why in sorted(failed.items()))
            return [decide_common.ConditionValue(REVISION_FAILED, "True", "CopyFailed", message)]
        if get_condition(conditions, REVISION_FAILED) is not None:
            return [
                decide_common.ConditionValue(
                    REVISION_FAILED,
                    "False",
                    "NoFailure",
                    "Every copy holds the source's current revision or is being made.",
                )
            ]
        return []

    @staticmethod
    def _ordered(entries: Mapping[str, dict[str, Any]], wanted: list[str]) -> list[dict[str, Any]]:
        """Spec order first, then copies still being removed."""
        ordered = [entries[r] for r in wanted if r in entries]
        return ordered + [e for r, e in entries.items() if r not in wanted]

    def _retry_or_stall(
        self,
        uid: str,
        error: EciError,
        events: list[Event],
        status: dict[str, Any],
        entries: Mapping[str, dict[str, Any]],
        finish: Callable[[list[decide_common.ConditionValue], float], PassResult],
        account: str,
        keep: bool = False,
    ) -> PassResult:
        reason, message, delay = self._failed_call(uid, error, events, account)
        if not keep and entries:
            status["destinations"] = list(entries.values())
        return finish(decide_common.error_conditions(reason, message, terminal=not error.retryable), delay)

    async def _destination(
        self,
        cloud: CloudClient,
        target: _Target,
        spec: DataCacheReplicationSpec,
        entry: dict[str, Any],
        meta: Mapping[str, Any],
        now: datetime,
        events: list[Event],
        account: str,
        stored_serving: frozenset[str] = frozenset(),
    ) -> _Outcome:
        """Drive one destination until a step that waits for ECI; `entry` is its status, updated:
        the copy its pods get, then the copy of the source's new revision beside it (when one is
        due), then the previous copies no pod is bound to any more."""
        identity = Identity.of(self.settings.cluster_id, meta)
        previous = frozenset(
            str(old["dataCacheId"]) for old in entry.get("previous") or [] if old.get("dataCacheId")
        )
        manager = CopyManager(cloud, dataclasses.replace(target, held=previous), entry, identity, now)
        try:
            step, _ = await self.sync(manager, now)
        finally:
            events += manager.events
        outcome = _Outcome(step)
        building = entry.get("building") or {}
        if building.get("dataCacheId") and building["dataCacheId"] == entry.get("dataCacheId"):
            entry["building"] = None  # the entry's copy went missing and this one was found in its place
        if manager.superseded:
            await self._build(cloud, target, entry, identity, now, events, outcome, account)
        elif entry.get("building"):
            why = "the copy new pods get holds the source's current revision"
            await self._drop_build(cloud, entry, meta["namespace"], why, events, outcome, account)
        await self._collect_previous(cloud, spec, meta, entry, events, outcome, account, stored_serving)
        return outcome

    async def _build(
        self,
        cloud: CloudClient,
        target: _Target,
        entry: dict[str, Any],
        identity: Identity,
        now: datetime,
        events: list[Event],
        outcome: _Outcome,
        account: str,
    ) -> None:
        """Make the copy of the source's current revision beside the entry's (its `building`),
        which new pods of the region keep getting; switch the entry to it once it is Available."""
        region, source = target.destination.region, target.source
        building: dict[str, Any] = dict(entry.get("building") or {})
        if building and decide.is_stale(
            building.get("sourceDataCacheId"),
            building.get("sourceRevision"),
            source.data_cache_id,
            target.revision,
        ):  # made for a revision the source no longer holds: it goes before another is made
            why = "the source holds another revision now"
            if not await self._drop_build(cloud, entry, identity.namespace, why, events, outcome, account):
                return
            building = {}
        label = (
            f"revision {target.revision_name}" if target.revision_name else f"source {source.data_cache_id}"
        )
        serving = entry.get("dataCacheId")
        if not building:
            # Counted on from the entry's creates, so its ClientToken is one never sent before.
            building = {"copyGeneration": entry.get("copyGeneration") or 0}
            events.append(
                Event(
                    "Normal",
                    BUILDING_REASON,
                    f"Copying {label} to {region} beside {serving}, which new pods there get meanwhile.",
                )
            )
        held = frozenset(i for i in _held_ids(entry) if i != building.get("dataCacheId"))
        manager = CopyManager(cloud, dataclasses.replace(target, held=held), building, identity, now)
        step: DestStep | None = None
        try:
            step = (await self.sync(manager, now))[0]
        except EciError as error:
            reason, message = decide_common.reason_from_code(error.code), error_text(error, account)
            if error.retryable:
                outcome.retry = error
                building.update(reason=reason, message=f"{message} Retrying.")
            else:
                building.update(reason=reason, message=message, failedGeneration=target.generation)
                events.append(Event("Warning", reason, f"Copy of {label} to {region}: {message}"))
                step = DestStep.FAILED
        finally:
            events += [Event(e.type, e.reason, f"New copy of {label}: {e.message}") for e in manager.events]
            entry["building"] = building
            entry["copyGeneration"] = max(
                entry.get("copyGeneration") or 0, building.get("copyGeneration") or 0
            )
        serves = outcome.step == DestStep.READY
        if step == DestStep.READY:
            self._switch(entry, building, label, events)
        elif step == DestStep.FAILED:
            made = building.get("dataCacheId") or "not made"
            why = f"The copy of {label} ({made}) failed: {building.get('message') or 'no reason given'}"
            outcome.failed_build = f"{why}; {serving} keeps serving." if serves else f"{why}."
            if serves:
                entry.update(reason=BUILD_FAILED_REASON, message=outcome.failed_build)
        else:
            outcome.busy = True
            if serves:
                state = building.get("status") or building.get("reason") or "being made"
                message = f"Copying {label} ({building.get('dataCacheId') or 'not made yet'}: {state}); "
                entry.update(reason=BUILDING_REASON, message=message + f"{serving} serves meanwhile.")

    @staticmethod
    def _switch(entry: dict[str, Any], building: Mapping[str, Any], label: str, events: list[Event]) -> None:
        """The entry names the new copy from this status write on: new pods of the region get
        it. The old copy is kept in `previous` until it is gone."""
        region, old_id, new_id = entry["region"], entry.get("dataCacheId"), building.get("dataCacheId")
        previous = list(entry.get("previous") or [])
        if old_id:
            previous.append({key: entry[key] for key in _PREVIOUS_KEYS if entry.get(key) is not None})
        for key in _COPY_KEYS:
            entry[key] = building.get(key)
        entry.update(
            building=None,
            previous=previous or None,
            reason="Available",
            message=f"Copy of {label} is Available; new pods in {region} get it.",
        )
        kept = f"; {old_id} is kept while pods use it" if old_id else ""
        events.append(
            Event(
                "Normal",
                "CopySwitched",
                f"Copy {new_id} of {label} in {region} is the one new pods get{kept}.",
            )
        )

    async def _drop_build(
        self,
        cloud: CloudClient,
        entry: dict[str, Any],
        namespace: str,
        why: str,
        events: list[Event],
        outcome: _Outcome,
        account: str,
    ) -> bool:
        """Delete a copy being made that is no longer wanted (no pod was ever bound to it);
        True once it is gone."""
        region, building = entry["region"], dict(entry.get("building") or {})
        cache_id = building.get("dataCacheId")
        gone = await self._delete_copy(cloud, region, cache_id, namespace, events, outcome, account)
        if not gone:
            building["status"] = STATUS_DELETING
            entry["building"] = building
            return False
        entry["building"] = None
        if cache_id:
            events.append(Event("Normal", "CopyDropped", f"Copy {cache_id} in {region} dropped: {why}."))
        return True

    async def _collect_previous(
        self,
        cloud: CloudClient,
        spec: DataCacheReplicationSpec,
        meta: Mapping[str, Any],
        entry: dict[str, Any],
        events: list[Event],
        outcome: _Outcome,
        account: str,
        stored_serving: frozenset[str] = frozenset(),
    ) -> None:
        """The copies the entry no longer gives to new pods: their consumers, and the deletion
        (per deletionPolicy) of each once no pod of the region is bound to it and the stored
        status no longer gives it to new pods (`stored_serving`: the webhook binds from that)."""
        previous = list(entry.get("previous") or [])
        if not previous:
            return
        region, namespace = entry["region"], meta["namespace"]
        users = await self._copy_users_by_id(spec, meta, region)
        retain = deletion_policy(spec, self.settings) == "Retain"
        kept: list[dict[str, Any]] = []
        for old in previous:
            cache_id = old.get("dataCacheId")
            if not cache_id:
                continue
            old = {**old, "consumers": len(users.get(str(cache_id), []))}
            if old["consumers"] or str(cache_id) in stored_serving:
                kept.append(old)
                outcome.busy = outcome.busy or not old["consumers"]  # gone next pass, once stored
                continue
            if retain:
                message = f"Copy {cache_id} in {region} superseded; deletionPolicy Retain: left, unused."
                events.append(Event("Normal", "Retained", message))
                continue
            if await self._delete_copy(cloud, region, str(cache_id), namespace, events, outcome, account):
                message = f"Superseded copy {cache_id} in {region} is gone; no pod used it."
                events.append(Event("Normal", "CopyDeleted", message))
            else:
                kept.append({**old, "status": STATUS_DELETING})
        entry["previous"] = kept or None

    async def _delete_copy(
        self,
        cloud: CloudClient,
        region: str,
        cache_id: str | None,
        namespace: str,
        events: list[Event],
        outcome: _Outcome,
        account: str,
    ) -> bool:
        """Delete one copy this namespace made; True once ECI no longer lists it (or it is not
        this namespace's, then left alone). An error leaves it for the next pass."""
        if not cache_id:
            return True
        try:
            removal = await remove(cloud, region, [cache_id], None, self._own_copy(namespace))
        except EciError as error:
            if error.retryable:
                outcome.retry = outcome.retry or error
            else:
                reason = decide_common.reason_from_code(error.code)
                events.append(
                    Event(
                        "Warning",
                        reason,
                        f"Deleting copy {cache_id} in {region}: {error_text(error, account)}",
                    )
                )
            return False
        events += [Event("Normal", "Deleting", f"Deleting copy {d} in {region}.") for d in removal.deleting]
        events += [self._not_owned(refused, region) for refused in removal.refused]
        if removal.pending:
            outcome.busy = True
        return not removal.pending

    async def _copy_users_by_id(
        self, spec: DataCacheReplicationSpec, meta: Mapping[str, Any], region: str
    ) -> dict[str, list[str]]:
        """Pods of `region` bound to each of this object's copies there (only a DataCache source
        can be named by pods)."""
        if spec.source.data_cache_ref is None:
            return {}
        return await self.copy_users(meta["namespace"], spec.source.data_cache_ref.name, region, meta["name"])

    async def _remove(
        self,
        cloud: CloudClient,
        region: str,
        entry: dict[str, Any],
        policy: str,
        namespace: str,
        events: list[Event],
    ) -> bool:
        """Delete (or retain) the copies of a removed destination (the one its pods got, and one
        being made or superseded); True once its entry can go."""
        held = _held_ids(entry)
        if policy == "Retain" or not held:
            if held:
                what = f"copy {held[0]}" if len(held) == 1 else f"copies {', '.join(held)}"
                events.append(Event("Normal", "Retained", f"deletionPolicy Retain: {what} left in {region}."))
            return True
        removal = await remove(cloud, region, held, None, self._own_copy(namespace))
        events += [Event("Normal", "Deleted", f"Copy {gone} in {region} is gone.") for gone in removal.gone]
        events += [self._not_owned(cache_id, region) for cache_id in removal.refused]
        events += [Event("Normal", "Deleting", f"Deleting copy {d} in {region}.") for d in removal.deleting]
        if not removal.pending:
            return True
        _set_cloud_status(entry, STATUS_DELETING, self.clock())
        removing = DestinationStatus(
            region=region, reason="Removing", message="The destination was removed from the spec."
        )
        entry.update(removing.to_patch())
        return False

    async def _copy_users(
        self, spec: DataCacheReplicationSpec, meta: Mapping[str, Any], region: str
    ) -> list[str]:
        """Pods bound to this object's copy in `region` (only a DataCache source can be named by pods)."""
        if spec.source.data_cache_ref is None:
            return []
        return await self.users(meta["namespace"], spec.source.data_cache_ref.name, region, meta["name"])

    async def _finalize(self, body: Mapping[str, Any]) -> tuple[bool, list[Event], dict[str, Any] | None]:
        """Delete (or retain) every copy this object made once no pod uses it; True once the
        finalizer can go."""
        meta = body["metadata"]
        spec = DataCacheReplicationSpec.model_validate(body.get("spec") or {})
        status = self.current_status(body)
        entries = {e["region"]: e for e in status.get("destinations") or [] if e.get("region")}
        regions = list(dict.fromkeys([d.region for d in spec.destinations] + list(entries)))
        events: list[Event] = []
        users: list[str] = []
        for region in regions:
            users += await self._copy_users(spec, meta, region)
        if users:
            return False, events, self._in_use(meta, status, users, "its copies", events)
        if deletion_policy(spec, self.settings) == "Retain":
            kept = [f"{cache_id} in {r}" for r, e in entries.items() for cache_id in _held_ids(e)]
            what = ", ".join(kept) or "no copies"
            return True, [Event("Normal", "Retained", f"deletionPolicy Retain: {what} left.")], None
        picked = await self.cloud_for(meta["namespace"], status, self._held_id(status))
        if isinstance(picked, AccountRefused):
            return False, events, self._deletion_waits(meta, status, picked.reason, picked.message, events)
        cloud = picked[1]
        pending = False
        for region in regions:
            try:
                pending |= await self._delete_copies(
                    cloud, region, _held_ids(entries.get(region, {})), meta, events
                )
            except EciError as error:
                if not error.retryable:
                    raise
                pending = True  # this region again on the next attempt; the others went on
        return not pending, events, None

    def _own_copy(self, namespace: str) -> Callable[[ObservedCache], bool]:
        """A copy this namespace made (never deleted on the word of a status alone)."""
        return made_by(self.settings.cluster_id, namespace)

    @staticmethod
    def _not_owned(cache_id: str, region: str) -> Event:
        return Event(
            "Warning", "NotOwned", f"Data cache {cache_id} in {region} is not this namespace's: left alone."
        )

    async def _delete_copies(
        self,
        cloud: CloudClient,
        region: str,
        known_ids: list[str],
        meta: Mapping[str, Any],
        events: list[Event],
    ) -> bool:
        """Delete the copies in one region, also one whose id was lost (a crash right after
        the call), found by its tags; True while one still exists."""
        removal = await remove(
            cloud,
            region,
            known_ids,
            {OWNER_UID_TAG: meta["uid"]},
            self._own_copy(meta["namespace"]),
        )
        events += [Event("Normal", "Deleting", f"Deleting copy {d} in {region}.") for d in removal.deleting]
        events += [self._not_owned(cache_id, region) for cache_id in removal.refused]
        return removal.pending


class CopyManager(ResourceManager[DestStep]):
    """One copy of a destination: the one its entry names (what its pods get), or the copy of
    the source's new revision being made beside it (`entry` is then the entry's `building`)."""

    def __init__(
        self,
        cloud: CloudClient,
        target: _Target,
        entry: dict[str, Any],
        identity: Identity,
        now: datetime,
    ) -> None:
        dest = target.destination
        record = CloudRecord(entry, counter=DestinationStatus.alias("copy_generation"))
        super().__init__(cloud, dest.region, record, identity)
        self.target = target
        self.entry = entry
        self.now = now
        self.tags = decide.copy_tags(dest.tags, identity, dest.region)
        self.superseded = False  # holds an older revision and the new one's copy is made beside it

    def own_tags(self) -> dict[str, str]:
        return {**self.identity.lookup_tags(), DESTINATION_REGION_TAG: self.region}

    def is_own(self, found: ObservedCache) -> bool:
        return found.data_cache_id not in self.target.held  # another copy the entry holds

    def address(self) -> tuple[str, str] | None:
        """Where the copy of the source's current revision goes."""
        dest, source = self.target.destination, self._source
        bucket = dest.bucket or source.bucket
        path = decide.copy_path(dest.path, source.path, self.target.revision_name)
        return (bucket, path) if bucket and path else None

    def path_taken(self, occupant: ObservedCache) -> DestStep:
        address = self.address()
        assert address is not None
        message = path_in_use(
            occupant.data_cache_id, owner_of(occupant.tags), self.identity.cluster, *address
        )
        self._note(reason="PathInUse", message=message)
        return DestStep.FAILED

    def _note(self, **fields: Any) -> None:
        """Set fields of the copy's status, by their names in `CopyStatus` (which a destination's
        entry has too)."""
        unknown = fields.keys() - CopyStatus.model_fields.keys()
        if unknown:  # the model ignores unknown keys (old objects must parse): refuse them here
            raise TypeError(f"DestinationStatus has no field {', '.join(sorted(unknown))}")
        self.entry.update(CopyStatus(**fields).to_patch())

    @property
    def _source(self) -> ObservedCache:
        return self.target.source

    def decide(self, observed: ObservedCache | None, recovered: bool) -> DestStep:
        target, entry, dest = self.target, self.entry, self.target.destination
        # Where the spec puts the copy of the revision it holds (one recorded before copies
        # followed revisions: at the destination's path itself, as they were made).
        own_path = decide.copy_path(dest.path, None, entry.get("revision"))
        address = self.address()
        situation = DestinationSituation(
            known_id=self.record.id,
            recovered=recovered,
            observed=observed,
            generation=target.generation,
            failed_generation=entry.get("failedGeneration"),
            moved=observed is not None and decide.copy_moved(dest.bucket, own_path, observed, self._source),
            changed=observed is not None and bool(self.delta(observed)),
            stale=decide.is_stale(
                entry.get("sourceDataCacheId"),
                entry.get("sourceRevision"),
                self._source.data_cache_id,
                target.revision,
            ),
            retry_requested=target.retry,
            beside=observed is not None and address is not None and decide.builds_beside(observed, *address),
        )
        self.superseded = situation.superseded
        return decide.next_destination_step(situation)

    def verb(self, step: DestStep) -> Verb:
        return decide.VERBS.get(step, Verb.SETTLE)

    def wanted(self) -> CacheFields:
        dest = self.target.destination
        return decide.copy_fields(dest.name, dest.retention_days, self.tags)

    def client_token(self, creates: int) -> str:
        return decide.copy_token(self.owner_uid, self.region, creates, self._source.data_cache_id)

    async def create(self, client_token: str) -> str:
        source = self._source
        request = copy_request(self.target.destination, self.tags, self.target.revision_name)
        return await self.cloud.copy(source.region, source.data_cache_id, request, client_token)

    def recovered(self, found: ObservedCache) -> None:
        # Looked for at the current revision's address, past the copies the entry holds: one
        # found there holds the current revision.
        self._note(
            source_data_cache_id=self._source.data_cache_id,
            source_revision=self.target.revision,
            revision=self.target.revision_name,
        )
        self.events.append(
            Event("Normal", "Recovered", f"Found copy {found.data_cache_id} in {self.region} by its tags.")
        )

    def created(self, new_id: str) -> None:
        source_id, source_region = self._source.data_cache_id, self._source.region
        _set_cloud_status(self.entry, "Creating", self.now)
        address = self.address()
        self._note(
            source_data_cache_id=source_id,
            source_revision=self.target.revision,
            revision=self.target.revision_name,
            bucket=address[0] if address else None,
            path=address[1] if address else None,
            reason="Copying",
            message=f"Copying {source_id} from {source_region}.",
            failed_generation=None,
        )
        self.events.append(Event("Normal", "Copying", f"Copying {source_id} to {self.region} as {new_id}."))

    def updating(self, sent: CacheFields) -> None:
        _set_cloud_status(self.entry, "Updating", self.now)
        self._note(reason="Updating", message=f"Updating {sent.describe()}.")
        self.events.append(
            Event("Normal", "Updating", f"Updating {sent.describe()} of copy {self.record.id}.")
        )

    def forgotten(self, gone_id: str) -> None:
        self.events.append(
            Event("Warning", "CopyMissing", f"Copy {gone_id} is gone from {self.region}; copying again.")
        )

    def replacing(self, step: DestStep, old_id: str) -> None:
        region = self.region
        if step == DestStep.REPLACE_FAILED:
            self._note(failed_generation=None)
            message = f"Deleting failed copy {old_id} in {region} to copy again."
        elif step == DestStep.MOVE:
            message = f"Bucket or path changed: replacing copy {old_id} in {region}."
        else:
            source = f"{self._source.data_cache_id} revision {self.target.revision}"
            message = f"Source changed to {source}: replacing copy {old_id} in {region}."
        self.events.append(Event("Normal", "Replacing", message))

    def settled(self, step: DestStep, observed: ObservedCache | None) -> None:
        entry, known_id, region = self.entry, self.record.id, self.region
        if observed is not None:
            _set_cloud_status(entry, observed.status, self.now)
            self._note(last_sync_time=self.now.replace(microsecond=0))
            if observed.path:  # what pods in the region mount
                self._note(bucket=observed.bucket, path=observed.path)
        if step == DestStep.READY:
            if entry.get("reason") not in _SERVING_REASONS:
                self.events.append(
                    Event("Normal", "CopyAvailable", f"Copy {known_id} in {region} is Available.")
                )
            self._note(reason="Available", message=f"Copy of {entry.get('sourceDataCacheId')} is Available.")
        elif step == DestStep.FAILED and observed is not None:
            message = observed.last_event_message or f"The copy is {observed.status}."
            if entry.get("failedGeneration") is None:
                self._note(failed_generation=self.target.generation)
                self.events.append(Event("Warning", "CopyFailed", f"Copy {known_id} in {region}: {message}"))
            self._note(reason="CopyFailed", message=message)
        elif step == DestStep.WAIT and observed is not None:
            progress = f" ({observed.progress})" if observed.progress else ""
            self._note(
                reason=observed.status or "Unknown", message=f"The copy is {observed.status}{progress}."
            )
