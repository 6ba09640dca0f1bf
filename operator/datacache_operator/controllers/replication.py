"""One reconcile pass and one finalize pass of a DataCacheReplication: resolve the source,
ask the pure decisions in `reconcile.replication` what each destination needs, call
CopyDataCache / DescribeDataCaches / DeleteDataCache, compute the status.

No kopf here: the handlers in `main.py` call these and post the returned events.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from datacache_operator import kube
from datacache_operator.api.common import DATACACHES, DESTINATION_REGION_TAG, OWNER_UID_TAG, is_paused
from datacache_operator.api.conditions import get_condition
from datacache_operator.api.replication import (
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
from datacache_operator.controllers.sync import CloudRecord, ResourceManager, remove
from datacache_operator.kube import NamespaceReader, ObjectReader
from datacache_operator.reconcile import common as decide_common
from datacache_operator.reconcile import replication as decide
from datacache_operator.reconcile.binding import in_use_message
from datacache_operator.reconcile.common import Event
from datacache_operator.reconcile.ownership import Identity, owned_by, owner_of, path_in_use
from datacache_operator.reconcile.replication import DestinationSituation, DestStep, SourceState
from datacache_operator.reconcile.sync import CacheFields, Verb
from datacache_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

# Stalled reasons that the copies themselves give (they keep being watched), as opposed to a
# terminal error of a call, which is not repeated until the spec changes.
_COPY_STALL_REASONS = frozenset({"CopyFailed", "NotOwned"}) | ACCOUNT_STALL_REASONS


def deletion_policy(spec: DataCacheReplicationSpec, settings: OperatorSettings) -> str:
    return str(spec.deletion_policy or settings.default_deletion_policy)


def copy_request(dest: ReplicationDestination, tags: Mapping[str, str]) -> cloud_models.CopyRequest:
    return cloud_models.CopyRequest(
        destination_region=dest.region,
        bucket=dest.bucket,
        path=dest.path,
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


def _set_cloud_status(entry: dict[str, Any], cloud_status: str | None, now: datetime) -> None:
    changed = entry.get("status") != cloud_status
    moved = DestinationStatus(region=entry["region"], status=cloud_status)
    if changed:
        moved.last_transition_time = now.replace(microsecond=0)
    entry.update(moved.to_patch())


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
    ) -> None:
        super().__init__(settings, cloud, clock, rng, users, read_namespace, accounts)
        self.read_object = read_object

    @staticmethod
    def _held_id(status: Mapping[str, Any]) -> str | None:
        """A copy the object holds (any region's): what stays in the account it was made in."""
        return next(
            (e["dataCacheId"] for e in status.get("destinations") or [] if e.get("dataCacheId")), None
        )

    async def _resolve_source(
        self, cloud: CloudClient, spec: DataCacheReplicationSpec, namespace: str
    ) -> tuple[SourceState, str | None, str | None, str, ObservedCache | None]:
        """(state, source id, source region, a label for messages, the source as read)."""
        source = spec.source
        if source.data_cache_ref is not None:
            name = source.data_cache_ref.name
            label = f"DataCache {name}"
            obj = await self.read_object(DATACACHES, namespace, name)
            if obj is None:
                return SourceState.NOT_FOUND, None, None, label, None
            obj_status = obj.get("status") or {}
            known_id = obj_status.get("dataCacheId")
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
                return SourceState.NOT_OWNED, known_id, region, refused, None
        return decide.source_state(known_id, True, observed), known_id, region, label, observed

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
            state, source_id, source_region, label, source = await self._resolve_source(
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
                target = _Target(dest, source, revision, generation, retry)
                try:
                    steps[dest.region] = await self._destination(cloud, target, entry, meta, now, events)
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
            values = decide.summary_conditions(steps)
            previous_ready = get_condition(conditions, "Ready") or {}
            if values[0].status == "True" and previous_ready.get("status") != "True":
                events.append(Event("Normal", "Available", values[0].message))
            return finish(values, decide.poll_delay(state, steps, loading, stable))

        status["destinations"] = self._ordered(entries, wanted) or None
        status.update(ReplicationStatus(ready_destinations=f"0/{len(wanted)}").to_patch())
        previous_reason = (get_condition(conditions, "Ready") or {}).get("reason")
        values = decide.source_conditions(state, label)
        if previous_reason != str(state):
            kind = "Normal" if state == SourceState.NOT_READY else "Warning"
            events.append(Event(kind, str(state), values[0].message))
        return finish(values, decide.poll_delay(state, steps, loading, stable))

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
        entry: dict[str, Any],
        meta: Mapping[str, Any],
        now: datetime,
        events: list[Event],
    ) -> DestStep:
        """Drive one destination until a step that waits for ECI; `entry` is its status, updated."""
        identity = Identity.of(self.settings.cluster_id, meta)
        manager = CopyManager(cloud, target, entry, identity, now)
        try:
            step, _ = await self.sync(manager, now)
        finally:
            events += manager.events
        return step

    async def _remove(
        self,
        cloud: CloudClient,
        region: str,
        entry: dict[str, Any],
        policy: str,
        namespace: str,
        events: list[Event],
    ) -> bool:
        """Delete (or retain) the copy of a removed destination; True once its entry can go."""
        known_id = entry.get("dataCacheId")
        if policy == "Retain" or not known_id:
            if known_id:
                events.append(
                    Event("Normal", "Retained", f"deletionPolicy Retain: copy {known_id} left in {region}.")
                )
            return True
        removal = await remove(cloud, region, [known_id], None, self._own_copy(namespace))
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
            kept = [f"{e['dataCacheId']} in {r}" for r, e in entries.items() if e.get("dataCacheId")]
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
                    cloud, region, entries.get(region, {}).get("dataCacheId"), meta, events
                )
            except EciError as error:
                if not error.retryable:
                    raise
                pending = True  # this region again on the next attempt; the others went on
        return not pending, events, None

    def _own_copy(self, namespace: str) -> Callable[[ObservedCache], bool]:
        """A copy this namespace made (never deleted on the word of a status alone)."""
        cluster = self.settings.cluster_id
        return lambda cache: owned_by(owner_of(cache.tags), cluster, namespace)

    @staticmethod
    def _not_owned(cache_id: str, region: str) -> Event:
        return Event(
            "Warning", "NotOwned", f"Data cache {cache_id} in {region} is not this namespace's: left alone."
        )

    async def _delete_copies(
        self,
        cloud: CloudClient,
        region: str,
        known_id: str | None,
        meta: Mapping[str, Any],
        events: list[Event],
    ) -> bool:
        """Delete the copies in one region, also one whose id was lost (a crash right after
        the call), found by its tags; True while one still exists."""
        removal = await remove(
            cloud,
            region,
            [known_id] if known_id else [],
            {OWNER_UID_TAG: meta["uid"]},
            self._own_copy(meta["namespace"]),
        )
        events += [Event("Normal", "Deleting", f"Deleting copy {d} in {region}.") for d in removal.deleting]
        events += [self._not_owned(cache_id, region) for cache_id in removal.refused]
        return removal.pending


class CopyManager(ResourceManager[DestStep]):
    """One destination's cloud resource: its copy of the source."""

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

    def own_tags(self) -> dict[str, str]:
        return {**self.identity.lookup_tags(), DESTINATION_REGION_TAG: self.region}

    def address(self) -> tuple[str, str] | None:
        dest, source = self.target.destination, self._source
        bucket, path = dest.bucket or source.bucket, dest.path or source.path
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
        """Set fields of the destination's status, by their names in `DestinationStatus`."""
        unknown = fields.keys() - DestinationStatus.model_fields.keys()
        if unknown:  # the model ignores unknown keys (old objects must parse): refuse them here
            raise TypeError(f"DestinationStatus has no field {', '.join(sorted(unknown))}")
        self.entry.update(DestinationStatus(region=self.region, **fields).to_patch())

    @property
    def _source(self) -> ObservedCache:
        return self.target.source

    def decide(self, observed: ObservedCache | None, recovered: bool) -> DestStep:
        target, entry = self.target, self.entry
        situation = DestinationSituation(
            known_id=self.record.id,
            recovered=recovered,
            observed=observed,
            generation=target.generation,
            failed_generation=entry.get("failedGeneration"),
            moved=observed is not None
            and decide.copy_moved(target.destination.bucket, target.destination.path, observed, self._source),
            changed=observed is not None and bool(self.delta(observed)),
            stale=decide.is_stale(
                entry.get("sourceDataCacheId"),
                entry.get("sourceRevision"),
                self._source.data_cache_id,
                target.revision,
            ),
            retry_requested=target.retry,
        )
        return decide.next_destination_step(situation)

    def verb(self, step: DestStep) -> Verb:
        return decide.VERBS.get(step, Verb.SETTLE)

    def wanted(self) -> CacheFields:
        dest = self.target.destination
        return decide.copy_fields(dest.name, dest.retention_days, self.tags)

    def client_token(self, creates: int) -> str:
        return decide.copy_token(self.owner_uid, self.region, creates)

    async def create(self, client_token: str) -> str:
        source = self._source
        request = copy_request(self.target.destination, self.tags)
        return await self.cloud.copy(source.region, source.data_cache_id, request, client_token)

    def recovered(self, found: ObservedCache) -> None:
        # Old copies are deleted before a new one is made, so a live one is the newest.
        self._note(source_data_cache_id=self._source.data_cache_id, source_revision=self.target.revision)
        self.events.append(
            Event("Normal", "Recovered", f"Found copy {found.data_cache_id} in {self.region} by its tags.")
        )

    def created(self, new_id: str) -> None:
        source_id, source_region = self._source.data_cache_id, self._source.region
        _set_cloud_status(self.entry, "Creating", self.now)
        self._note(
            source_data_cache_id=source_id,
            source_revision=self.target.revision,
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
        if step == DestStep.READY:
            if entry.get("reason") != "Available":
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
