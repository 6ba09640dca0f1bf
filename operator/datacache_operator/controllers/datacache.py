"""One reconcile pass and one finalize pass of a DataCache: gather inputs, ask the pure
decisions in `reconcile.datacache`, call ECI through the cloud client, compute the status.

No kopf here: the handlers in `main.py` call these and post the returned events.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from datacache_operator import kube
from datacache_operator.api.buckets import default_bucket
from datacache_operator.api.common import (
    DESTINATION_REGION_TAG,
    OWNER_UID_TAG,
    ManagementPolicy,
    is_paused,
    may,
)
from datacache_operator.api.conditions import get_condition
from datacache_operator.api.datacache import DataCacheSpec, DataCacheStatus, MissingSecretKeyError
from datacache_operator.cloud import hubs
from datacache_operator.cloud import models as cloud_models
from datacache_operator.cloud.client import CloudClient
from datacache_operator.cloud.errors import EciError
from datacache_operator.cloud.models import STATUS_AVAILABLE, ObservedCache, parse_time
from datacache_operator.controllers.accounts import Accounts
from datacache_operator.controllers.base import (
    ACCOUNT_STALL_REASONS,
    AccountRefused,
    PassResult,
    PollingController,
    UsersLister,
    backoff_delay,
    error_text,
)
from datacache_operator.controllers.revisions import (
    RevisionPass,
    RevisionUsers,
    nobody_by_id,
    revision_key,
    revision_summary,
    serving,
)
from datacache_operator.controllers.sync import CloudRecord, ResourceManager, remove
from datacache_operator.kube import NamespaceReader, SecretNotFound, SecretReader
from datacache_operator.reconcile import common as decide_common
from datacache_operator.reconcile import datacache as decide
from datacache_operator.reconcile.common import Event
from datacache_operator.reconcile.datacache import DesiredCache, Situation, Step
from datacache_operator.reconcile.ownership import (
    Identity,
    Owner,
    made_by,
    may_take,
    owned_by,
    owner_of,
    path_in_use,
)
from datacache_operator.reconcile.revisions import FIRST as FIRST_REVISION
from datacache_operator.reconcile.revisions import number, revision_path
from datacache_operator.reconcile.sync import CacheFields, Verb
from datacache_operator.settings import OperatorSettings

CommitResolver = Callable[..., Awaitable[hubs.PinnedSource]]  # as hubs.resolve_commit
# (namespace, cache, revision) -> the workloads rolled ("Deployment/name")
Roller = Callable[[str, str, str], Awaitable[list[str]]]

# Stalled reasons that come from the cache itself (and keep being watched), as opposed to
# a terminal error of a call, which is not repeated until the spec changes.
_CACHE_STALL_REASONS = frozenset(
    {"Failed", "UpdateFailed", "Expired", "NotFound", "NotOwned", "BucketNotAllowed", "PathInUse"}
    | ACCOUNT_STALL_REASONS
)

logger = logging.getLogger(__name__)


def desired_cache(
    spec: DataCacheSpec,
    meta: Mapping[str, Any],
    settings: OperatorSettings,
    secret_data: Mapping[str, str] | None,
) -> DesiredCache:
    source = spec.data_source
    net = spec.net_config
    return DesiredCache(
        region=spec.region or settings.default_region,
        bucket=spec.bucket or default_bucket(meta["namespace"], settings.tenancy),
        path=spec.path,
        name=spec.name or decide_common.cloud_name(meta["name"]),
        size=spec.size,
        retention_days=spec.retention_days,
        data_source_type=str(source.type) if source else None,
        options=source.resolved_options(secret_data) if source else {},
        tags={**spec.tags, **Identity.of(settings.cluster_id, meta).tags()},
        resource_group_id=spec.resource_group_id,
        net_config=net.model_dump(exclude_none=True) if net else {},
    )


def _net_config(desired: DesiredCache) -> cloud_models.NetConfig | None:
    return cloud_models.NetConfig.model_validate(desired.net_config) if desired.net_config else None


def _data_source(desired: DesiredCache) -> cloud_models.DataSource | None:
    if desired.data_source_type is None:
        return None
    return cloud_models.DataSource(type=desired.data_source_type, options=dict(desired.options))


def create_request(desired: DesiredCache) -> cloud_models.CreateRequest:
    return cloud_models.CreateRequest(
        path=desired.path,
        bucket=desired.bucket,
        name=desired.name,
        size=desired.size,
        retention_days=desired.retention_days,
        data_source=_data_source(desired),
        net_config=_net_config(desired),
        tags=dict(desired.tags),
        resource_group_id=desired.resource_group_id,
    )


def observed_status(observed: ObservedCache) -> dict[str, Any]:
    """What the status shows of the cache as ECI reports it (a field ECI leaves out goes)."""
    return DataCacheStatus(
        data_cache_id=observed.data_cache_id,
        region=observed.region,
        status=observed.status,
        bucket=observed.bucket,
        path=observed.path,
        size=observed.size,
        progress=observed.progress,
        creation_time=_seconds(observed.creation_time),
        expire_time=_seconds(observed.expire_time),
        last_matched_time=_seconds(observed.last_matched_time),
        message=observed.last_event_message,
    ).to_patch()


def held_cache_id(status: Mapping[str, Any]) -> str | None:
    """A cloud cache the object holds (the current revision's, or any other revision's): what
    ties it to the account it was made in."""
    if status.get("dataCacheId"):
        return str(status["dataCacheId"])
    return next((str(e["dataCacheId"]) for e in status.get("revisions") or [] if e.get("dataCacheId")), None)


def _seconds(moment: datetime | None) -> datetime | None:
    """metav1.Time has second precision."""
    return moment.replace(microsecond=0) if moment is not None else None


class DataCacheController(PollingController):
    def __init__(
        self,
        settings: OperatorSettings,
        cloud: CloudClient,
        read_secret: SecretReader,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        users: UsersLister | None = None,
        read_namespace: NamespaceReader = kube.read_namespace,
        accounts: Accounts | None = None,
        revision_users: RevisionUsers = nobody_by_id,
        roll: Roller | None = None,
        resolve: CommitResolver = hubs.resolve_commit,
    ) -> None:
        super().__init__(settings, cloud, clock, rng, users, read_namespace, accounts)
        self.resolve = resolve  # a hub branch or tag -> its commit
        self.read_secret = read_secret
        self.roll = roll  # workloads onto a new current revision (chart: rollouts.enabled)
        self.revision_users = revision_users  # pods bound to each cache id: what a superseded revision keeps

    async def _secret_data(self, spec: DataCacheSpec, namespace: str) -> dict[str, str] | None:
        if spec.data_source is None or spec.data_source.secret_ref is None:
            return None
        data: dict[str, str] = await self.read_secret(namespace, spec.data_source.secret_ref.name)
        return data

    async def reconcile(self, body: Mapping[str, Any]) -> PassResult:
        meta = body["metadata"]
        uid = meta["uid"]
        generation = meta.get("generation")
        status = self.current_status(body)
        conditions = list(status.get("conditions") or [])
        now = self.clock()
        events: list[Event] = []
        spec = DataCacheSpec.model_validate(body.get("spec") or {})

        pinned_values: list[decide_common.ConditionValue] = []

        def finish(values: list[decide_common.ConditionValue], delay: float) -> PassResult:
            refresh = spec.refresh.seconds() if spec.refresh and status.get("sourceCommit") else None
            delay = min(delay, refresh) if refresh else delay
            return self._conclude(uid, status, values + pinned_values, generation, now, delay, events)

        loading, stable = self.settings.poll_interval_loading, self.settings.poll_interval_stable
        if is_paused(meta):
            return finish(decide.conditions_for(Step.PAUSED, None), stable)

        requested = self.pending_reconcile_request(meta, status)
        retry = requested is not None
        if retry:
            # Tried again once per new value: a terminal error or a Failed build of this
            # very spec, e.g. after a quota or a RAM policy was fixed outside Kubernetes.
            status.update(DataCacheStatus(last_handled_reconcile_at=requested).to_patch())
        if self.stalled_by_a_terminal_error(meta, status, _CACHE_STALL_REASONS, retry):
            # A terminal error for this very spec: calling again would fail the same way.
            return finish([], stable)

        try:
            desired = desired_cache(
                spec, meta, self.settings, await self._secret_data(spec, meta["namespace"])
            )
        except (SecretNotFound, MissingSecretKeyError) as error:
            message = str(error).strip("'\"")
            return finish(
                [
                    decide_common.ConditionValue("Ready", "False", "SecretNotFound", message),
                    decide_common.ConditionValue("Synced", "False", "SecretNotFound", f"{message} Retrying."),
                ],
                max(loading, 30.0),
            )
        status.update(DataCacheStatus(region=desired.region).to_patch())
        picked = await self.cloud_for(meta["namespace"], status, held_cache_id(status))
        if isinstance(picked, AccountRefused):
            return finish(self.account_conditions(picked), stable if picked.stalls else max(loading, 30.0))
        account, cloud = picked
        status.update(DataCacheStatus(account=account).to_patch())
        desired, pinned_values, commit = await self._pinned(spec, status, desired, now, events, retry)

        adopted = spec.data_cache_id is not None
        # An adopted cache's bucket is the one ECI reports (checked after the read below).
        refused = None if adopted else await self.bucket_refusal(desired.bucket, meta["namespace"])
        if refused is not None:
            return finish(decide_common.refused_conditions("BucketNotAllowed", f"spec.{refused}."), stable)
        if status.get("idleSince"):
            waiting = await self.users(meta["namespace"], meta["name"], desired.region, None)
            if not waiting:
                await self._delete_idle(body, status, cloud, desired.region)
                return finish(decide.idle_conditions(str(spec.expire_after_unused)), stable)
            # A cache not deleted yet serves again; a deleted one is built again at its path.
            current_entry: dict[str, Any] = next(
                (e for e in status.get("revisions") or [] if e.get("name") == status.get("currentRevision")),
                {},
            )
            status.update(
                DataCacheStatus(
                    idle_since=None, unused_since=None, data_cache_id=current_entry.get("dataCacheId")
                ).to_patch()
            )
            events.append(
                Event("Normal", "Waking", f"Pod {waiting[0]} names it: it serves again once Available.")
            )
        current = status.get("currentRevision") or FIRST_REVISION
        status.update(DataCacheStatus(current_revision=current).to_patch())
        identity = Identity.of(self.settings.cluster_id, meta)
        manager = CacheManager(
            cloud,
            dataclasses.replace(desired, path=revision_path(desired.path, current)),
            status,
            meta,
            identity,
            spec.data_cache_id,
            self._failed_generation(conditions, retry),
            now,
            may_take=lambda owner: self.may_take(owner, meta["namespace"]),
            may_update=may(spec.management_policies, adopted, ManagementPolicy.UPDATE),
            # What reloads the data goes to a new revision while this one serves.
            keep_source=spec.replaces and serving(status),
            revision=current,
        )
        try:
            step, observed = await self.sync(manager, now)
        except EciError as error:
            events += manager.events
            reason, message, delay = self._failed_call(uid, error, events, account)
            return finish(
                decide_common.error_conditions(reason, message, terminal=not error.retryable), delay
            )
        events += manager.events
        self._failures.pop(uid, None)
        status.update(DataCacheStatus(last_sync_time=_seconds(now)).to_patch())
        if step == Step.PATH_IN_USE:
            return finish(decide_common.refused_conditions("PathInUse", manager.occupied), stable)
        if step == Step.NOT_OWNED:
            assert observed is not None
            status.update({key: None for key in observed_status(observed)})  # nothing of its data
            message = self.refusal(owner_of(observed.tags), "spec.dataCacheId names a data cache that")
            return finish(decide_common.refused_conditions("NotOwned", message), stable)
        refused = (
            await self.bucket_refusal(observed.bucket, meta["namespace"]) if adopted and observed else None
        )
        if refused is not None:
            # Its pods could not mount it: the admission policies hold them to their buckets.
            message = f"The adopted data cache's {refused}."
            return finish(decide_common.refused_conditions("BucketNotAllowed", message), stable)
        if observed is not None:
            status.update(observed_status(observed))
        values = decide.conditions_for(step, observed)
        delay = decide.poll_delay(step, loading, stable)
        if (
            step == Step.READY
            and spec.expire_after_unused
            and await self._gone_idle(body, spec, status, now, cloud)
        ):
            events.append(
                Event("Normal", "Idle", f"Unused for {spec.expire_after_unused}: cloud caches deleted.")
            )
            return finish(decide.idle_conditions(spec.expire_after_unused), stable)
        if not spec.replaces:
            return finish(values, delay)
        beside = await RevisionPass(
            cloud=cloud,
            spec=spec,
            key=revision_key(spec, desired.options),
            summary=revision_summary(spec, commit),
            stored_current=(body.get("status") or {}).get("currentRevision"),
            meta=meta,
            status=status,
            desired=desired,
            cluster=self.settings.cluster_id,
            manager_for=lambda wanted, entry, name: CacheManager(
                cloud,
                wanted,
                entry,
                meta,
                identity,
                None,
                entry.get("failedGeneration"),
                now,
                revision=name,
                token_scope=str(entry.get("sourceKey") or ""),
            ),
            sync=lambda revision: self.sync(revision, now),
            users_by_id=self.revision_users,
            error_text=lambda error: error_text(error, account),
        ).run()
        events += beside.events
        if beside.took_over is not None:
            values = decide.conditions_for(Step.READY, None)
        if self.roll is not None and status.get("status") == STATUS_AVAILABLE:
            # Only once the apiserver holds the new current revision: the pods a roll creates
            # are bound by the webhook from the stored object, never from this pass's status.
            stored = (body.get("status") or {}).get("currentRevision")
            if stored == status.get("currentRevision"):
                await self._roll_out(meta, status, events)
            else:
                delay = min(delay, loading)  # the next pass rolls, once this status is written
        if beside.error is not None:
            delay = min(delay, backoff_delay(beside.error, 0, self.settings))
        elif beside.busy:
            delay = min(delay, loading)
        return finish(values + beside.conditions, delay)

    async def _pinned(
        self,
        spec: DataCacheSpec,
        status: dict[str, Any],
        desired: DesiredCache,
        now: datetime,
        events: list[Event],
        asked_again: bool = False,
    ) -> tuple[DesiredCache, list[decide_common.ConditionValue], str | None]:
        """A hub source named by a branch or tag, built from the commit it is at: asked of the hub
        once per branch (and again every spec.refresh.interval), kept in status so that a cache
        built again (deleted outside, idle) holds the same data. A hub that does not answer
        leaves the last commit in use, or, before there is one, the build goes from the branch.
        A reconcile request (`asked_again`) asks the hub at once."""
        source = spec.data_source
        # The resolved options: repoId or revision may come from the Secret.
        hub = (
            hubs.hub_source(str(source.type), desired.options) if source and not spec.data_cache_id else None
        )
        if hub is None or hub.is_pinned:
            status.update(
                DataCacheStatus(
                    source_requested=None, source_commit=None, source_resolved_time=None
                ).to_patch()
            )
            return desired, [], None
        wanted = f"{hub.repo_source}:{hub.repo_id}@{hub.requested}"
        same = status.get("sourceRequested") == wanted
        commit = status.get("sourceCommit") if same else None
        values: list[decide_common.ConditionValue] = []
        if asked_again or decide.resolution_due(
            same,
            commit,
            parse_time(status.get("sourceResolvedTime")),
            now,
            spec.refresh.seconds() if spec.refresh else None,
        ):
            asked = DataCacheStatus(source_requested=wanted, source_resolved_time=_seconds(now))
            if not same:
                asked.source_commit = None  # another branch or repository: the old commit is not its
            status.update(asked.to_patch())
            try:
                pinned = await self.resolve(
                    hub.repo_source,
                    hub.repo_id,
                    hub.revision,
                    self.settings,
                    token=desired.options.get("accessToken"),
                )
            except hubs.HubError as error:
                kept = (
                    f"commit {commit} stays in use"
                    if commit
                    else f"built from {hub.requested} as it is, unpinned"
                )
                values.append(
                    decide_common.ConditionValue(
                        "SourcePinned", "False", error.code, f"{error.message}; {kept}."
                    )
                )
            else:
                if commit and pinned.commit != commit:
                    events.append(
                        Event(
                            "Normal",
                            "SourceMoved",
                            f"{hub.requested} of {hub.repo_id} moved: {commit} -> {pinned.commit}.",
                        )
                    )
                commit = pinned.commit
                status.update(DataCacheStatus(source_commit=commit).to_patch())
        if commit is None:
            return desired, values, None
        if not values:
            values.append(
                decide_common.ConditionValue(
                    "SourcePinned", "True", "Pinned", f"{hub.requested} is at {commit}."
                )
            )
        return dataclasses.replace(desired, options={**desired.options, "revision": commit}), values, commit

    async def _roll_out(self, meta: Mapping[str, Any], status: dict[str, Any], events: list[Event]) -> None:
        """Roll the opted-in workloads onto the current revision once it differs from the one
        they were last rolled onto (level-based: a failed or interrupted roll is tried again
        next pass). The revision current when rollouts were first seen is not rolled onto."""
        assert self.roll is not None
        current, rolled = status.get("currentRevision"), status.get("rolledOutRevision")
        if rolled is None or rolled == current:
            status.update(DataCacheStatus(rolled_out_revision=current).to_patch())
            return
        try:
            names = await self.roll(meta["namespace"], meta["name"], str(current))
        except Exception as error:  # a 403, a workload that kept changing: tried again next pass
            events.append(Event("Warning", "RolloutFailed", f"Rolling onto revision {current}: {error}"))
            return
        status.update(DataCacheStatus(rolled_out_revision=current).to_patch())
        if names:
            events.append(
                Event("Normal", "RolledOut", f"Rolling {', '.join(names)} onto revision {current}.")
            )

    async def _gone_idle(
        self,
        body: Mapping[str, Any],
        spec: DataCacheSpec,
        status: dict[str, Any],
        now: datetime,
        cloud: CloudClient,
    ) -> bool:
        """Scale to zero, first step: once no pod has used the cache for spec.expireAfterUnused,
        the object shows Idle with no dataCacheId (pods that name it from then on wait at the
        gate); the cloud caches go in a later pass, once that is stored and no pod names it
        (`_delete_idle`). True when it went idle in this pass. Times are the cloud's (its
        answers' Date), as ECI's creation and last-match times are."""
        now = cloud.server_now(str(status.get("region") or self.settings.default_region)) or now
        consumers = int((body.get("status") or {}).get("consumers") or 0)  # the pod binder's
        since = decide.unused_since(consumers, parse_time(status.get("unusedSince")), now)
        status.update(DataCacheStatus(unused_since=_seconds(since)).to_patch())
        if any(
            number(e.get("name", "")) > number(status.get("currentRevision") or "")
            for e in status.get("revisions") or []
        ):
            return False  # a new revision is being built: someone changed the spec
        due = decide.idle_due(
            consumers,
            since,
            parse_time(status.get("lastMatchedTime")),
            parse_time(status.get("creationTime")),
            now,
            spec.unused_seconds(),
        )
        if not due:
            return False
        current = status.get("currentRevision")
        entries = [dict(e) for e in status.get("revisions") or []]
        if not any(e.get("name") == current for e in entries):
            entries.append({"name": current})
        for entry in entries:  # what the second step deletes
            if entry.get("name") == current:
                entry.update(
                    dataCacheId=status.get("dataCacheId"),
                    path=status.get("path"),
                    bucket=status.get("bucket"),
                )
        status["revisions"] = entries
        status.update(
            DataCacheStatus(
                idle_since=_seconds(now), unused_since=None, data_cache_id=None, status=None, progress=None
            ).to_patch()
        )
        return True

    async def _delete_idle(
        self, body: Mapping[str, Any], status: dict[str, Any], cloud: CloudClient, region: str
    ) -> None:
        """Scale to zero, second step: the caches of an object whose stored status is Idle go
        (the caller found no pod naming it)."""
        if not (body.get("status") or {}).get("idleSince"):
            return  # Idle not stored yet: the webhook may still bind pods to the old id
        ids = [str(e["dataCacheId"]) for e in status.get("revisions") or [] if e.get("dataCacheId")]
        if not ids:
            return
        try:
            removal = await remove(
                cloud, region, ids, None, made_by(self.settings.cluster_id, body["metadata"]["namespace"])
            )
        except EciError:
            return  # tried again next pass
        if removal.pending:
            return
        keep = {"name", "path", "bucket", "source", "sourceKey"}
        status["revisions"] = [
            {k: v for k, v in e.items() if k in keep}
            for e in status.get("revisions") or []
            if e.get("name") == status.get("currentRevision")
        ] or None

    @staticmethod
    def _failed_generation(conditions: list[dict[str, Any]], retry: bool) -> int | None:
        """The generation whose spec built a Failed cache (a Failed build stalls until the
        spec changes); a reconcile request counts as a change."""
        stalled = get_condition(conditions, "Stalled")
        if not (stalled and stalled.get("status") == "True" and stalled.get("reason") == "Failed"):
            return None
        failed: int | None = stalled.get("observedGeneration")
        return failed - 1 if retry and failed is not None else failed

    async def _finalize(self, body: Mapping[str, Any]) -> tuple[bool, list[Event], dict[str, Any] | None]:
        """Once no pod uses it, delete (or retain) the cloud cache; True once the finalizer can go."""
        meta = body["metadata"]
        spec = DataCacheSpec.model_validate(body.get("spec") or {})
        status = self.current_status(body)
        region = status.get("region") or spec.region or self.settings.default_region
        users = await self.users(meta["namespace"], meta["name"], region, None)
        if users:  # like a PVC in use: the data stays while a pod may read it
            events: list[Event] = []
            return False, events, self._in_use(meta, status, users, "the cloud cache", events)
        return await self._delete_cache(meta, spec, status, region)

    async def _delete_cache(
        self, meta: Mapping[str, Any], spec: DataCacheSpec, status: dict[str, Any], region: str
    ) -> tuple[bool, list[Event], dict[str, Any] | None]:
        adopted = spec.data_cache_id is not None
        default_policy = "Retain" if adopted else self.settings.default_deletion_policy
        policy = str(spec.deletion_policy or default_policy)
        known_id = spec.data_cache_id or status.get("dataCacheId")
        what = f"data cache {known_id}" if known_id else "no data cache"
        if policy == "Retain":
            return (
                True,
                [Event("Normal", "Retained", f"deletionPolicy Retain: {what} left in {region}.")],
                None,
            )
        if not may(spec.management_policies, adopted, ManagementPolicy.DELETE):
            message = f"managementPolicies do not include Delete: {what} left in {region}."
            return True, [Event("Normal", "Retained", message)], None
        cluster, namespace = self.settings.cluster_id, meta["namespace"]
        events: list[Event] = []
        picked = await self.cloud_for(namespace, status, known_id)
        if isinstance(picked, AccountRefused):
            return False, events, self._deletion_waits(meta, status, picked.reason, picked.message, events)
        cloud = picked[1]
        grants = await self.grants(namespace) if adopted else frozenset()

        def deletable(cache: ObservedCache) -> bool:
            # Never on the word of a status alone: what is deleted is this namespace's, or the
            # adopted cache this namespace may take.
            owner = owner_of(cache.tags)
            return owned_by(owner, cluster, namespace) or (
                adopted and cache.data_cache_id == known_id and may_take(owner, cluster, namespace, grants)
            )

        # A create whose reply was lost (of any revision) may have made one: found by its tag.
        tags = None if adopted else {OWNER_UID_TAG: meta["uid"]}
        # Every revision's cache goes with the object (pods of any revision hold the deletion).
        others = [str(e["dataCacheId"]) for e in status.get("revisions") or [] if e.get("dataCacheId")]
        ids = list(dict.fromkeys(([known_id] if known_id else []) + others))
        try:
            removal = await remove(cloud, region, ids, tags, deletable)
        except EciError as error:
            if not error.retryable:
                raise
            return False, events, None
        events += [Event("Normal", "Deleted", f"Data cache {gone} is gone.") for gone in removal.gone]
        events += [Event("Normal", "Deleting", f"Deleting data cache {d}.") for d in removal.deleting]
        events += [
            Event("Warning", "NotOwned", f"Data cache {r} is not this namespace's: left in {region}.")
            for r in removal.refused
        ]
        return not removal.pending, events, None


class CacheManager(ResourceManager[Step]):
    """A DataCache's one cloud resource: its cache."""

    def __init__(
        self,
        cloud: CloudClient,
        desired: DesiredCache,
        status: dict[str, Any],
        meta: Mapping[str, Any],
        identity: Identity,
        adopt_id: str | None,
        failed_generation: int | None,
        now: datetime,
        *,
        may_take: Callable[[Owner | None], Awaitable[bool]] | None = None,
        may_update: bool = True,
        keep_source: bool = False,
        revision: str = FIRST_REVISION,
        token_scope: str = "",
    ) -> None:
        record = CloudRecord(status, counter=DataCacheStatus.alias("cache_generation"), pinned_id=adopt_id)
        super().__init__(cloud, desired.region, record, identity)
        self.desired = desired
        self.status = status
        self.generation = meta.get("generation") or 0
        self.adopt_id = adopt_id
        self.failed_generation = failed_generation
        self.now = now
        self._may_take = may_take
        self.taken = True  # the adopted cache, as last read, is one this namespace may take
        self.may_update = may_update
        self.occupied = ""  # why nothing was created (PATH_IN_USE)
        self.keep_source = keep_source  # its data source and size stay as built (a new revision takes them)
        self.revision = revision
        self.token_scope = token_scope  # what this revision is built from: a reused name never reuses a token
        self.rebuilt = False  # an update in this pass loads the data again

    def is_own(self, found: ObservedCache) -> bool:
        return DESTINATION_REGION_TAG not in found.tags  # a replication's copy of the same name

    def address(self) -> tuple[str, str]:
        return self.desired.bucket, self.desired.path

    def path_taken(self, occupant: ObservedCache) -> Step:
        owner = owner_of(occupant.tags)
        self.occupied = path_in_use(occupant.data_cache_id, owner, self.identity.cluster, *self.address())
        return Step.PATH_IN_USE

    async def read_one(self, cache_id: str) -> ObservedCache | None:
        observed = await super().read_one(cache_id)
        if observed is not None and self.adopt_id and self._may_take is not None:
            self.taken = await self._may_take(owner_of(observed.tags))
        return observed

    def decide(self, observed: ObservedCache | None, recovered: bool) -> Step:
        known_id = self.record.id
        situation = Situation(
            generation=self.generation,
            adopt_id=self.adopt_id,
            known_id=known_id,
            recovered=recovered,
            observed=observed,
            looked_up=known_id is not None,
            expire_time=parse_time(self.status.get("expireTime")),
            failed_generation=self.failed_generation,
            now=self.cloud.server_now(self.region) or self.now,
            may_take=observed is None or self.taken,
            may_update=self.may_update,
        )
        return decide.next_step(situation, self.desired, self.record.applied_retention, self.wanted())

    def verb(self, step: Step) -> Verb:
        return decide.VERBS.get(step, Verb.SETTLE)

    def wanted(self) -> CacheFields:
        fields = self.desired.fields()
        return dataclasses.replace(fields, data_source=None, size=None) if self.keep_source else fields

    def client_token(self, creates: int) -> str:
        if self.revision == FIRST_REVISION:
            return decide_common.client_token(self.owner_uid, creates)
        return decide_common.client_token(self.owner_uid, self.revision, self.token_scope, creates)

    async def create(self, client_token: str) -> str:
        return await self.cloud.create(self.region, create_request(self.desired), client_token)

    def update_request(self, sent: CacheFields) -> cloud_models.UpdateRequest:
        request = super().update_request(sent)
        if not sent.rebuilds:
            return request
        return request.model_copy(
            update={"data_source": _data_source(self.desired), "net_config": _net_config(self.desired)}
        )

    def recovered(self, found: ObservedCache) -> None:
        self.events.append(
            Event("Normal", "Recovered", f"Found data cache {found.data_cache_id} by its owner tag.")
        )

    def created(self, new_id: str) -> None:
        desired = self.desired
        created = DataCacheStatus(
            status="Creating", bucket=desired.bucket, path=desired.path, size=desired.size
        )
        self.status.update(created.to_patch())
        self.events.append(Event("Normal", "Creating", f"Created data cache {new_id} in {self.region}."))

    def updating(self, sent: CacheFields) -> None:
        self.rebuilt = self.rebuilt or sent.rebuilds
        self.events.append(Event("Normal", "Updating", f"Updating {sent.describe()} of {self.record.id}."))

    def forgotten(self, gone_id: str) -> None:
        self.events.append(
            Event(
                "Warning",
                "CacheMissing",
                f"Data cache {gone_id} is gone from {self.region}; creating a new one.",
            )
        )

    def replacing(self, step: Step, old_id: str) -> None:
        self.events.append(
            Event(
                "Normal", "Replacing", f"Deleting failed data cache {old_id} to build it from the new spec."
            )
        )

    def settled(self, step: Step, observed: ObservedCache | None) -> None:
        known_id, previous = self.record.id, self.status.get("status")
        if step == Step.EXPIRED:
            if previous != "Expired":
                self.events.append(
                    Event("Warning", "Expired", f"Data cache {known_id} expired after its retention.")
                )
            self.status.update(DataCacheStatus(status="Expired").to_patch())
        if step == Step.READY and previous != "Available":
            self.events.append(Event("Normal", "Available", f"Data cache {known_id} is Available."))
        if step == Step.FAILED and observed is not None and previous != observed.status:
            self.events.append(
                Event("Warning", observed.status or "Failed", observed.last_event_message or "Failed.")
            )
