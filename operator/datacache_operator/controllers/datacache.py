"""One reconcile pass and one finalize pass of a DataCache: gather inputs, ask the pure
decisions in `reconcile.datacache`, call ECI through the cloud client, compute the status.

No kopf here: the handlers in `main.py` call these and post the returned events.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from datacache_operator.api.common import OWNER_UID_TAG, is_paused
from datacache_operator.api.conditions import format_time, get_condition
from datacache_operator.api.datacache import DataCacheSpec, MissingSecretKeyError
from datacache_operator.cloud import models as cloud_models
from datacache_operator.cloud.errors import EciError
from datacache_operator.cloud.models import STATUS_DELETING, ObservedCache, parse_time
from datacache_operator.controllers.base import Event, PassResult, PollingController, UsersLister
from datacache_operator.kube import SecretNotFound
from datacache_operator.reconcile import common as decide_common
from datacache_operator.reconcile import datacache as decide
from datacache_operator.reconcile.datacache import DesiredCache, Situation, Step
from datacache_operator.settings import OperatorSettings

# Stalled reasons that come from the cache itself (and keep being watched), as opposed to
# a terminal error of a call, which is not repeated until the spec changes.
_CACHE_STALL_REASONS = frozenset({"Failed", "UpdateFailed", "Expired", "NotFound"})

logger = logging.getLogger(__name__)


class CloudClient(Protocol):
    async def describe(self, region: str, data_cache_id: str) -> ObservedCache | None: ...
    async def find_by_tags(self, region: str, tags: Mapping[str, str]) -> list[ObservedCache]: ...
    async def create(self, region: str, request: cloud_models.CreateRequest, client_token: str) -> str: ...
    async def update(self, region: str, data_cache_id: str, request: cloud_models.UpdateRequest) -> None: ...
    async def delete(self, region: str, data_cache_id: str) -> bool: ...
    def server_now(self, region: str) -> datetime | None: ...


SecretReader = Callable[[str, str], Any]  # async (namespace, name) -> dict[str, str]


def desired_cache(
    spec: DataCacheSpec, meta: Mapping[str, Any], default_region: str, secret_data: Mapping[str, str] | None
) -> DesiredCache:
    source = spec.data_source
    net = spec.net_config
    return DesiredCache(
        region=spec.region or default_region,
        bucket=spec.bucket,
        path=spec.path,
        name=spec.name or decide_common.cloud_name(meta["name"]),
        size=spec.size,
        retention_days=spec.retention_days,
        data_source_type=str(source.type) if source else None,
        options=source.resolved_options(secret_data) if source else {},
        tags={**spec.tags, **decide_common.owner_tags(meta["uid"], meta["namespace"], meta["name"])},
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


def update_request(desired: DesiredCache, changes: decide.UpdateFields) -> cloud_models.UpdateRequest:
    rebuild = changes.data_source or changes.size is not None
    return cloud_models.UpdateRequest(
        name=changes.name,
        size=changes.size,
        retention_days=changes.retention_days,
        # A rebuild loads the data again: ECI needs the source (with its credentials) and network.
        data_source=_data_source(desired) if rebuild else None,
        net_config=_net_config(desired) if rebuild else None,
        tags=dict(changes.tags) if changes.tags is not None else None,
        resource_group_id=changes.resource_group_id,
    )


def observed_status(observed: ObservedCache) -> dict[str, Any]:
    return {
        "dataCacheId": observed.data_cache_id,
        "region": observed.region,
        "status": observed.status,
        "bucket": observed.bucket,
        "path": observed.path,
        "size": observed.size,
        "progress": observed.progress,
        "creationTime": format_time(observed.creation_time) if observed.creation_time else None,
        "expireTime": format_time(observed.expire_time) if observed.expire_time else None,
        "message": observed.last_event_message,
    }


class DataCacheController(PollingController):
    def __init__(
        self,
        settings: OperatorSettings,
        cloud: CloudClient,
        read_secret: SecretReader,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        users: UsersLister | None = None,
    ) -> None:
        super().__init__(settings, cloud, clock, rng, **({"users": users} if users else {}))
        self.cloud: CloudClient = cloud
        self.read_secret = read_secret

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

        def finish(values: list[decide_common.ConditionValue], delay: float) -> PassResult:
            return self._conclude(uid, status, values, generation, now, delay, events)

        loading, stable = self.settings.poll_interval_loading, self.settings.poll_interval_stable
        if is_paused(meta):
            return finish(decide.conditions_for(Step.PAUSED, None), stable)

        requested = self.pending_reconcile_request(meta, status)
        retry = requested is not None
        if retry:
            # Tried again once per new value: a terminal error or a Failed build of this
            # very spec, e.g. after a quota or a RAM policy was fixed outside Kubernetes.
            status["lastHandledReconcileAt"] = requested
        if self.stalled_by_a_terminal_error(meta, status, _CACHE_STALL_REASONS, retry):
            # A terminal error for this very spec: calling again would fail the same way.
            return finish([], stable)

        try:
            desired = desired_cache(
                spec, meta, self.settings.default_region, await self._secret_data(spec, meta["namespace"])
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
        status["region"] = desired.region

        try:
            step, observed = await self._act(spec, desired, meta, status, conditions, now, events, retry)
        except EciError as error:
            reason, message, delay = self._failed_call(uid, error, events)
            return finish(
                decide_common.error_conditions(reason, message, terminal=not error.retryable), delay
            )
        self._failures.pop(uid, None)
        status["lastSyncTime"] = format_time(now)
        if observed is not None:
            status.update(observed_status(observed))
        return finish(decide.conditions_for(step, observed), decide.poll_delay(step, loading, stable))

    async def _act(
        self,
        spec: DataCacheSpec,
        desired: DesiredCache,
        meta: Mapping[str, Any],
        status: dict[str, Any],
        conditions: list[dict[str, Any]],
        now: datetime,
        events: list[Event],
        retry: bool = False,
    ) -> tuple[Step, ObservedCache | None]:
        """Perform the next steps until one that waits for ECI; returns it with the last read."""
        region = desired.region
        # The tag lookup runs before a first create unless nothing can have made a cache yet.
        recovered = not status.get("cacheGeneration") and not self.needs_lookup(meta)
        stalled = get_condition(conditions, "Stalled")
        failed_generation = (
            stalled.get("observedGeneration")
            if stalled and stalled.get("status") == "True" and stalled.get("reason") == "Failed"
            else None
        )
        if retry and failed_generation is not None:
            failed_generation -= 1  # as if the spec had changed since the build failed
        for _ in range(4):  # at most: recreate -> recover -> create
            known_id = status.get("dataCacheId") if not spec.data_cache_id else spec.data_cache_id
            observed = await self.cloud.describe(region, known_id) if known_id else None
            situation = Situation(
                generation=meta.get("generation") or 0,
                adopt_id=spec.data_cache_id,
                known_id=known_id,
                recovered=recovered,
                observed=observed,
                looked_up=known_id is not None,
                expire_time=parse_time(status.get("expireTime")),
                failed_generation=failed_generation,
                now=self.cloud.server_now(region) or now,
            )
            step = decide.next_step(situation, desired, status.get("retentionDays"))
            if step == Step.RECOVER:
                recovered = True
                found = await self.find_own(region, meta["uid"], now)
                if found is not None:
                    status["dataCacheId"] = found.data_cache_id
                    events.append(
                        Event(
                            "Normal", "Recovered", f"Found data cache {found.data_cache_id} by its owner tag."
                        )
                    )
                continue
            if step == Step.CREATE:
                count = int(status.get("cacheGeneration") or 0)
                token = decide_common.client_token(meta["uid"], count)
                self.sending(meta["uid"])
                new_id = await self.cloud.create(region, create_request(desired), token)
                status.update(
                    dataCacheId=new_id, cacheGeneration=count + 1, retentionDays=desired.retention_days
                )
                status.update(status="Creating", bucket=desired.bucket, path=desired.path, size=desired.size)
                events.append(Event("Normal", "Creating", f"Created data cache {new_id} in {region}."))
                return step, None
            if step == Step.RECREATE:
                events.append(
                    Event(
                        "Warning",
                        "CacheMissing",
                        f"Data cache {known_id} is gone from {region}; creating a new one.",
                    )
                )
                status["dataCacheId"] = None
                recovered = False
                continue
            if step == Step.REPLACE_FAILED:
                assert known_id is not None
                await self.cloud.delete(region, known_id)
                events.append(
                    Event(
                        "Normal",
                        "Replacing",
                        f"Deleting failed data cache {known_id} to build it from the new spec.",
                    )
                )
                status["dataCacheId"] = None
                continue
            if step == Step.UPDATE:
                assert observed is not None and known_id is not None
                changes = decide.update_fields(desired, observed, status.get("retentionDays"))
                await self.cloud.update(region, known_id, update_request(desired, changes))
                if changes.retention_days is not None:
                    status["retentionDays"] = changes.retention_days
                events.append(Event("Normal", "Updating", f"Updating {changes.describe()} of {known_id}."))
                return step, observed
            if step == Step.EXPIRED and status.get("status") != "Expired":
                events.append(
                    Event("Warning", "Expired", f"Data cache {known_id} expired after its retention.")
                )
            if step == Step.EXPIRED:
                status["status"] = "Expired"
            if step == Step.READY and status.get("status") != "Available":
                events.append(Event("Normal", "Available", f"Data cache {known_id} is Available."))
            if step == Step.FAILED and observed is not None and status.get("status") != observed.status:
                events.append(
                    Event("Warning", observed.status or "Failed", observed.last_event_message or "Failed.")
                )
            return step, observed
        raise RuntimeError("reconcile did not settle")  # pragma: no cover - bounded loop

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
        done, events = await self._delete_cache(meta, spec, status, region)
        return done, events, None

    async def _delete_cache(
        self, meta: Mapping[str, Any], spec: DataCacheSpec, status: Mapping[str, Any], region: str
    ) -> tuple[bool, list[Event]]:
        default_policy = "Retain" if spec.data_cache_id else self.settings.default_deletion_policy
        policy = str(spec.deletion_policy or default_policy)
        known_id = status.get("dataCacheId") or spec.data_cache_id
        if policy == "Retain":
            what = f"data cache {known_id}" if known_id else "no data cache"
            return True, [Event("Normal", "Retained", f"deletionPolicy Retain: {what} left in {region}.")]
        if known_id is None:
            found = await self.cloud.find_by_tags(region, {OWNER_UID_TAG: meta["uid"]})
            if not found:
                return True, []
            known_id = found[0].data_cache_id
        observed = await self.cloud.describe(region, known_id)
        if observed is None:
            return True, [Event("Normal", "Deleted", f"Data cache {known_id} is gone.")]
        if observed.status == STATUS_DELETING:
            return False, []
        try:
            await self.cloud.delete(region, known_id)
        except EciError as error:
            if error.is_not_found:
                return True, []
            if not error.retryable:
                raise
            return False, []
        return False, [Event("Normal", "Deleting", f"Deleting data cache {known_id}.")]
