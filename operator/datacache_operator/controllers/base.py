"""What every controller shares: settings, the cloud client, a clock, jittered delays and
the count of objects whose last pass failed with a retryable error (for backoff)."""

from __future__ import annotations

import copy
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from datacache_operator import kube
from datacache_operator.api.binding import STATUS_KEYS_OF_THE_BINDER
from datacache_operator.api.buckets import bucket_allowed, bucket_refusal, default_bucket, namespace_bucket
from datacache_operator.api.common import MAY_ADOPT_FROM_ANNOTATION, reconcile_request
from datacache_operator.api.conditions import get_condition, set_condition
from datacache_operator.cloud.accounts import AccountCredentialsError
from datacache_operator.cloud.client import CloudClient
from datacache_operator.cloud.errors import EciError
from datacache_operator.cloud.models import ObservedCache
from datacache_operator.controllers.accounts import Accounts, OwnCredentialsOnly
from datacache_operator.controllers.sync import ResourceManager, StepT, sync
from datacache_operator.kube import NamespaceReader
from datacache_operator.reconcile.accounts import OWN_ACCOUNT, account_refusal
from datacache_operator.reconcile.binding import in_use_message
from datacache_operator.reconcile.common import ConditionValue, Event, reason_from_code, refused_conditions
from datacache_operator.reconcile.ownership import Owner, may_take, owned_by, parse_grants, refusal
from datacache_operator.settings import OperatorSettings

# (namespace, cache, region, replication or None) -> the pods bound to it ("namespace/name")
UsersLister = Callable[[str, str, str, str | None], Awaitable[list[str]]]


async def _nobody(namespace: str, cache: str, region: str, replication: str | None) -> list[str]:
    return []


def own_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status without the fields another writer (the pod binder) owns."""
    return {k: v for k, v in status.items() if k not in STATUS_KEYS_OF_THE_BINDER}


def longest_backoff(settings: OperatorSettings) -> float:
    """A minute, or the stable interval when that is shorter (never below the loading one)."""
    return max(settings.poll_interval_loading, min(settings.poll_interval_stable, 60.0))


def backoff_delay(error: EciError, attempt: int, settings: OperatorSettings) -> float:
    """Seconds before retrying a failed pass: from the loading interval up to
    `longest_backoff`; the server's retry-after always wins."""
    return error.retry_delay(attempt, base=settings.poll_interval_loading, cap=longest_backoff(settings))


def error_text(error: EciError, account: str = OWN_ACCOUNT) -> str:
    """The exact ECI code and its message, for condition messages and events; the EciAccount
    whose credentials made the call, when not the operator's own."""
    text = f"{error.code}: {error.message}" if error.message else error.code
    return f"EciAccount {account}: {text}" if account else text


@dataclass(frozen=True)
class AccountRefused:
    """Why an object's pass makes no call: its namespace's account cannot be used for it."""

    reason: str  # AccountConflict, AccountChanged (Stalled), AccountNotReady (retried)
    message: str

    @property
    def stalls(self) -> bool:
        return self.reason != ACCOUNT_NOT_READY


ACCOUNT_NOT_READY = "AccountNotReady"
# Refusals that only an administrator's change outside the object ends: every poll looks again.
ACCOUNT_STALL_REASONS = frozenset({"AccountConflict", "AccountChanged"})


@dataclass
class PassResult:
    status: dict[str, Any]  # the full new status (None values remove fields)
    delay: float  # seconds until the next pass
    events: list[Event] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        condition = get_condition(self.status.get("conditions"), "Ready")
        return bool(condition and condition["status"] == "True")


class PollingController:
    def __init__(
        self,
        settings: OperatorSettings,
        cloud: CloudClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        users: UsersLister | None = None,
        read_namespace: NamespaceReader = kube.read_namespace,
        accounts: Accounts | None = None,
    ) -> None:
        self.settings = settings
        self.read_namespace = read_namespace
        self.users = users or _nobody  # in-use protection: who still uses what a deletion would remove
        self.accounts = accounts or OwnCredentialsOnly(cloud)
        self.clock = clock
        self.rng = rng or random.Random()
        self._failures: dict[str, int] = {}  # uid -> consecutive retryable failures
        self._last_status: dict[str, dict[str, Any]] = {}  # uid -> the status our last pass computed

    async def cloud_for(
        self, namespace: str, status: Mapping[str, Any], cache_id: str | None
    ) -> tuple[str, CloudClient] | AccountRefused:
        """The account the object's calls go with (its namespace's) and that account's client,
        or why it makes none: `cache_id` (what the object holds) was made with the account
        its status records, and is never read, changed or deleted with another's credentials."""
        choice = await self.accounts.choice(namespace)
        refused = account_refusal(namespace, choice, status.get("account"), cache_id)
        if refused is not None:
            return AccountRefused(*refused)
        try:
            return choice.name, await self.accounts.client(choice.name)
        except AccountCredentialsError as error:
            return AccountRefused(ACCOUNT_NOT_READY, str(error))

    @staticmethod
    def account_conditions(refused: AccountRefused) -> list[ConditionValue]:
        if refused.stalls:
            return refused_conditions(refused.reason, f"{refused.message}.")
        return [
            ConditionValue("Ready", "False", refused.reason, f"{refused.message}."),
            ConditionValue("Synced", "False", refused.reason, f"{refused.message}; retrying."),
        ]

    async def _namespace_annotations(self, namespace: str) -> dict[str, str]:
        """Set by administrators: tenants cannot edit their Namespace."""
        found = await self.read_namespace(namespace)
        annotations: dict[str, str] = ((found or {}).get("metadata") or {}).get("annotations") or {}
        return annotations

    async def grants(self, namespace: str) -> frozenset[str]:
        """The namespaces whose caches an administrator let `namespace` adopt or copy by id."""
        return parse_grants((await self._namespace_annotations(namespace)).get(MAY_ADOPT_FROM_ANNOTATION))

    def default_bucket(self, namespace: str) -> str:
        return default_bucket(namespace, self.settings.tenancy)

    async def bucket_refusal(self, bucket: str | None, namespace: str) -> str | None:
        """Why `namespace` may not use `bucket` (None: it may). The Namespace is read only for a
        bucket other than its own."""
        if bucket is None or not self.settings.tenancy or bucket == namespace_bucket(namespace):
            return None
        if bucket_allowed(bucket, namespace, await self._namespace_annotations(namespace)):
            return None
        return bucket_refusal(bucket, namespace)

    async def may_take(self, owner: Owner | None, namespace: str) -> bool:
        """Whether `namespace` may adopt or copy a cache of `owner` (the grants are read only
        for another namespace's cache)."""
        cluster = self.settings.cluster_id
        if owner is None or owned_by(owner, cluster, namespace):
            return True
        return may_take(owner, cluster, namespace, await self.grants(namespace))

    def refusal(self, owner: Owner | None, what: str) -> str:
        assert owner is not None  # an unowned cache may always be taken
        return refusal(owner, self.settings.cluster_id, what, MAY_ADOPT_FROM_ANNOTATION)

    @staticmethod
    def pending_reconcile_request(meta: Mapping[str, Any], status: Mapping[str, Any]) -> str | None:
        """A reconcile-request value not handled yet (see ``status.lastHandledReconcileAt``)."""
        requested = reconcile_request(meta)
        return (
            requested if requested is not None and requested != status.get("lastHandledReconcileAt") else None
        )

    def stalled_by_a_terminal_error(
        self,
        meta: Mapping[str, Any],
        status: Mapping[str, Any],
        own_reasons: frozenset[str],
        retry: bool | None = None,
    ) -> bool:
        """Stalled for this generation by a refused call (not by the cloud resource's own
        state, `own_reasons`), and no new reconcile request: the pass makes no call."""
        if retry is None:
            retry = self.pending_reconcile_request(meta, status) is not None
        stalled = get_condition(status.get("conditions"), "Stalled")
        return bool(
            stalled
            and stalled.get("status") == "True"
            and stalled.get("observedGeneration") == meta.get("generation")
            and stalled.get("reason") not in own_reasons
            and not retry
        )

    def _failed_call(
        self, uid: str, error: EciError, events: list[Event], account: str = OWN_ACCOUNT
    ) -> tuple[str, str, float]:
        """Count a pass of `uid` that an ECI error ended: the condition reason, the message and
        the next delay. A retryable error backs off; a terminal one is also an event."""
        failures = self._failures.get(uid, 0)
        self._failures[uid] = failures + 1
        reason, message = reason_from_code(error.code), error_text(error, account)
        if error.retryable:
            return reason, message, backoff_delay(error, failures, self.settings)
        events.append(Event("Warning", reason, message))
        return reason, message, self.settings.poll_interval_stable

    async def sync(
        self, manager: ResourceManager[StepT], now: datetime
    ) -> tuple[StepT, ObservedCache | None]:
        """The generic sync of one resource of the object. Before any create it looks for the
        resource by the object's identity tags: a create whose reply was lost, or the object
        re-created (after a Retain delete, a restore, a move to a cluster of the same id)."""
        return await sync(manager, now)

    def current_status(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The status a pass starts from: the one our last pass computed, else the object's.

        The watched body shows our own status write only after a watch round trip; a pass
        that starts before it would act on an older status (a copy id already replaced, a
        ClientToken generation already used). After a restart the object's status is fresh.
        """
        remembered = self._last_status.get(body["metadata"]["uid"])
        return copy.deepcopy(remembered) if remembered is not None else own_status(body.get("status") or {})

    def caught_up(self, uid: str, status: Mapping[str, Any]) -> None:
        """The watch shows `status` (our fields): once it is the one our last pass computed,
        the object's own status is as new, and the remembered copy goes (memory at scale)."""
        if self._last_status.get(uid) == status:
            del self._last_status[uid]

    def not_written(self, uid: str) -> None:
        """The pass's status was not written (only its sync times were new): the object's own
        status is what the next pass starts from."""
        self._last_status.pop(uid, None)

    async def reconcile(self, body: Mapping[str, Any]) -> PassResult:
        """One pass of the object: read the cloud, decide, act; the status and the next pass."""
        raise NotImplementedError

    async def finalize(self, body: Mapping[str, Any]) -> tuple[bool, list[Event], dict[str, Any] | None]:
        """Delete (or retain) what the object made in the cloud; True once the finalizer can go.
        The status, when not None, is to be written (e.g. Ready=False while pods use the cache)."""
        done, events, status = await self._finalize(body)
        if done:
            self.forget(body["metadata"]["uid"])
        return done, events, status

    async def _finalize(self, body: Mapping[str, Any]) -> tuple[bool, list[Event], dict[str, Any] | None]:
        raise NotImplementedError

    def _in_use(
        self,
        meta: Mapping[str, Any],
        status: dict[str, Any],
        users: list[str],
        what: str,
        events: list[Event],
    ) -> dict[str, Any]:
        """The status (from `current_status`) of an object whose deletion waits for pods
        (Ready=False, reason InUse); an event naming a pod when the message is new."""
        return self._deletion_waits(meta, status, "InUse", in_use_message(users, what), events)

    def _deletion_waits(
        self, meta: Mapping[str, Any], status: dict[str, Any], reason: str, message: str, events: list[Event]
    ) -> dict[str, Any]:
        """The status of an object whose deletion waits (Ready=False with `reason`); an event
        when the message is new, not one every pass."""
        ready = get_condition(status.get("conditions"), "Ready") or {}
        if ready.get("reason") != reason or ready.get("message") != message:
            events.append(Event("Warning", reason, f"Deletion waits: {message}"))
        values = [ConditionValue("Ready", "False", reason, message)]
        return self._conclude(
            meta["uid"], status, values, meta.get("generation"), self.clock(), 0, events
        ).status

    def forget(self, uid: str) -> None:
        """The object is gone: drop what is remembered of it."""
        self._last_status.pop(uid, None)
        self._failures.pop(uid, None)

    def _jittered(self, delay: float) -> float:
        jitter = self.settings.poll_jitter
        return max(0.05, delay * (1 + self.rng.uniform(-jitter, jitter)))

    def _conclude(
        self,
        uid: str,
        status: dict[str, Any],
        values: Sequence[ConditionValue],
        generation: int | None,
        now: datetime,
        delay: float,
        events: list[Event],
    ) -> PassResult:
        """End a pass: set the conditions (Ready at least Unknown, as kstatus needs one from
        the first pass on) and observedGeneration, and jitter the next delay."""
        conditions = list(status.get("conditions") or [])
        for value in values:
            conditions = set_condition(
                conditions, value.type, value.status, value.reason, value.message, generation, now
            )
        if get_condition(conditions, "Ready") is None:
            conditions = set_condition(
                conditions, "Ready", "Unknown", "Reconciling", "Not reconciled yet.", generation, now
            )
        status.update(conditions=conditions, observedGeneration=generation)
        self._last_status[uid] = _without_nones(status)  # what the apiserver keeps of the patch
        return PassResult(status=status, delay=self._jittered(delay), events=events)


def _without_nones(value: Any) -> Any:
    """A deep copy without None values (a merge patch's None removes a field; the apiserver
    drops nulls inside list items, as our schema has no nullable fields)."""
    if isinstance(value, dict):
        return {k: _without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nones(v) for v in value]
    return value
