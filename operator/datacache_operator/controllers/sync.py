"""One sync for every cloud resource an object owns, in the shape of AWS ACK's resource
manager and its reconciler's Sync: a kind says how to create its resource, what to decide
and what each step leaves in its status (a :class:`ResourceManager`); reading, recovering a
lost id, the ClientToken, updating, replacing and deleting are written here once.

A DataCache has one resource (its cache), a DataCacheReplication one per destination (a copy).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from datacache_operator.cloud.client import CloudClient
from datacache_operator.cloud.errors import EciError
from datacache_operator.cloud.models import STATUS_DELETING, ObservedCache, UpdateRequest
from datacache_operator.reconcile.common import Event
from datacache_operator.reconcile.ownership import Identity
from datacache_operator.reconcile.sync import CacheFields, Verb, delta

StepT = TypeVar("StepT")

# A pass runs at most: replace or forget -> recover -> create (and one read between each).
MAX_STEPS = 5

# One create at a time per (region, bucket, path): the check that no cache is there and the
# create that puts one there happen together (the leader is the only process that creates).
_ADDRESSES: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = weakref.WeakValueDictionary()


@contextlib.asynccontextmanager
async def _creating_at(region: str, address: tuple[str, str] | None) -> AsyncIterator[None]:
    if address is None:
        yield
        return
    key = (region, *address)
    lock = _ADDRESSES.get(key)
    if lock is None:
        lock = _ADDRESSES[key] = asyncio.Lock()
    async with lock:
        yield


@dataclass
class CloudRecord:
    """The part of a status that names one cloud resource (the object's status, or one
    destination's entry), read and written in place through typed fields."""

    fields: MutableMapping[str, Any]
    counter: str  # the status key counting creates, so each create has its own ClientToken
    pinned_id: str | None = None  # an id the spec names (adoption): it wins over the status

    @property
    def id(self) -> str | None:
        return self.pinned_id or self.fields.get("dataCacheId")

    @id.setter
    def id(self, value: str | None) -> None:
        self.fields["dataCacheId"] = value

    @property
    def creates(self) -> int:
        return int(self.fields.get(self.counter) or 0)

    @property
    def applied_retention(self) -> int | None:
        """The retention the operator last sent (ECI does not report it)."""
        value = self.fields.get("retentionDays")
        return int(value) if value is not None else None

    def created(self, new_id: str, retention_days: int | None) -> None:
        self.fields.update({"dataCacheId": new_id, self.counter: self.creates + 1})
        self.fields["retentionDays"] = retention_days

    def updated(self, sent: CacheFields) -> None:
        if sent.retention_days is not None:
            self.fields["retentionDays"] = sent.retention_days


class ResourceManager(ABC, Generic[StepT]):
    """One cloud resource of one object: how to make it and what to decide (the kind's part),
    and what each step leaves in the record and tells the user."""

    def __init__(self, cloud: CloudClient, region: str, record: CloudRecord, identity: Identity) -> None:
        self.cloud = cloud
        self.region = region
        self.record = record
        self.identity = identity
        self.events: list[Event] = []
        self._at_address: list[ObservedCache] | None = None

    @property
    def owner_uid(self) -> str:
        return self.identity.uid

    # ---- the kind's part ------------------------------------------------------------------

    @abstractmethod
    def decide(self, observed: ObservedCache | None, recovered: bool) -> StepT:
        """The next step, from the read of the known id (None: gone or no id) alone."""

    @abstractmethod
    def verb(self, step: StepT) -> Verb: ...

    @abstractmethod
    def wanted(self) -> CacheFields:
        """What UpdateDataCache keeps matching (unset fields are left alone)."""

    @abstractmethod
    def client_token(self, creates: int) -> str:
        """The same for the same object, scope and count: a repeated call never makes two."""

    @abstractmethod
    async def create(self, client_token: str) -> str:
        """Create (or copy) the resource; its new id."""

    def address(self) -> tuple[str, str] | None:
        """The bucket and path a create puts the resource at (pods mount a cache by them):
        no create where another cache already is. None: not checked."""
        return None

    def path_taken(self, occupant: ObservedCache) -> StepT:
        """The step when another cache is at `address` (the create is not sent)."""
        raise NotImplementedError

    async def _live_at_address(self) -> list[ObservedCache]:
        """The caches at `address`, none being deleted (one describe, shared by the lookup and
        the check before the create that follows it in the same pass)."""
        if self._at_address is None:
            address = self.address()
            assert address is not None
            found = await self.cloud.find_at(self.region, *address)
            self._at_address = [c for c in found if c.status != STATUS_DELETING]
        return self._at_address

    async def occupant(self) -> ObservedCache | None:
        if self.address() is None:
            return None
        found = await self._live_at_address()
        self._at_address = None  # a create follows: what is there changes
        return min(found, key=lambda c: c.data_cache_id) if found else None

    def update_request(self, sent: CacheFields) -> UpdateRequest:
        return UpdateRequest(
            name=sent.name,
            size=sent.size,
            retention_days=sent.retention_days,
            tags=dict(sent.tags) if sent.tags is not None else None,
            resource_group_id=sent.resource_group_id,
        )

    # ---- what each step leaves --------------------------------------------------------------

    def recovered(self, found: ObservedCache) -> None:
        """A resource made earlier (its create's reply lost) was found by its tags."""

    @abstractmethod
    def created(self, new_id: str) -> None: ...

    @abstractmethod
    def updating(self, sent: CacheFields) -> None: ...

    @abstractmethod
    def forgotten(self, gone_id: str) -> None:
        """The resource vanished outside the operator."""

    @abstractmethod
    def replacing(self, step: StepT, old_id: str) -> None: ...

    def settled(self, step: StepT, observed: ObservedCache | None) -> None:
        """No call to send: what ECI shows goes to the record."""

    # ---- calls (ECI by default; another cloud resource overrides them) ----------------------

    async def read_one(self, cache_id: str) -> ObservedCache | None:
        return await self.cloud.describe(self.region, cache_id)

    async def update(self, cache_id: str, sent: CacheFields) -> None:
        await self.cloud.update(self.region, cache_id, self.update_request(sent))

    async def delete(self, cache_id: str) -> None:
        await self.cloud.delete(self.region, cache_id)

    def own_tags(self) -> dict[str, str]:
        """The tags every resource of this kind made for the object carries."""
        return self.identity.lookup_tags()

    def is_own(self, found: ObservedCache) -> bool:
        """A resource with `own_tags` is this manager's (not another kind's of the same name)."""
        return True

    async def find_own(self, now: datetime) -> ObservedCache | None:
        """The resource made for the object earlier (a create whose reply was lost, or the object
        re-created), by its tags: the oldest when a retry made more than one, none being deleted.
        With an address, it is looked for there (where its create put it), in the same describe
        that tells whether another cache is there."""
        own = self.own_tags()
        if self.address() is not None:
            found = await self._live_at_address()
        else:
            found = await self.cloud.find_by_tags(self.region, own)
        candidates = [
            c
            for c in found
            if c.status != STATUS_DELETING
            and all(c.tags.get(k) == v for k, v in own.items())
            and self.is_own(c)
        ]
        return (
            min(candidates, key=lambda c: (c.creation_time or now, c.data_cache_id)) if candidates else None
        )

    def delta(self, observed: ObservedCache) -> CacheFields:
        return delta(self.wanted(), observed, self.record.applied_retention)


async def sync(manager: ResourceManager[StepT], now: datetime) -> tuple[StepT, ObservedCache | None]:
    """Take steps until one that waits for ECI; that step and the last read of the resource.
    A first create is always preceded by the lookup by tags (`recovered` starts False)."""
    record = manager.record
    recovered = False
    for _ in range(MAX_STEPS):
        known_id = record.id
        observed = await manager.read_one(known_id) if known_id else None
        step = manager.decide(observed, recovered)
        verb = manager.verb(step)
        if verb == Verb.RECOVER:
            recovered = True
            found = await manager.find_own(now)
            if found is not None:
                record.id = found.data_cache_id
                manager.recovered(found)
            continue
        if verb == Verb.CREATE:
            async with _creating_at(manager.region, manager.address()):
                # Which of two caches at one bucket and path ECI gives a pod is undocumented.
                occupant = await manager.occupant()
                if occupant is not None:
                    taken = manager.path_taken(occupant)
                    manager.settled(taken, None)
                    return taken, None
                new_id = await manager.create(manager.client_token(record.creates))
            record.created(new_id, manager.wanted().retention_days)
            manager.created(new_id)
            return step, None
        assert known_id is not None, f"{step} needs a known resource"
        if verb == Verb.UPDATE:
            assert observed is not None
            sent = manager.delta(observed)
            await manager.update(known_id, sent)
            record.updated(sent)
            manager.updating(sent)
            return step, observed
        if verb == Verb.FORGET:
            manager.forgotten(known_id)
            record.id = None
            recovered = False  # its create may have been answered twice: look again
            continue
        if verb == Verb.REPLACE:
            # The old one goes first: pods pick a cache by bucket and path, and whether ECI
            # lets two caches share them is undocumented.
            await manager.delete(known_id)
            manager.replacing(step, known_id)
            record.id = None
            recovered = True  # the old one is Deleting and must not be found again
            continue
        manager.settled(step, observed)
        return step, observed
    raise RuntimeError("sync did not settle")  # pragma: no cover - bounded loop


@dataclass
class Removal:
    """What one round of deleting a resource (and any copy of it found by tags) did."""

    deleting: list[str] = field(default_factory=list)  # deletes sent in this round
    gone: list[str] = field(default_factory=list)  # named ids ECI no longer lists
    refused: list[str] = field(default_factory=list)  # not the caller's to delete: left alone
    pending: bool = False  # one still exists (Deleting or just asked to): come back


async def remove(
    cloud: CloudClient,
    region: str,
    ids: Iterable[str],
    tags: Mapping[str, str] | None,
    deletable: Callable[[ObservedCache], bool],
) -> Removal:
    """Delete the resources named by `ids` and, with `tags`, every one carrying them (one
    whose id was lost: a crash right after its create), each only if `deletable` (its owner
    tags) says so. A delete of one already gone is success; a retryable error is raised for
    the caller to come back."""
    found = {c.data_cache_id: c for c in await cloud.find_by_tags(region, tags)} if tags else {}
    outcome = Removal()
    for cache_id in ids:
        if cache_id in found:
            continue
        observed = await cloud.describe(region, cache_id)
        if observed is None:
            outcome.gone.append(cache_id)
        else:
            found[cache_id] = observed
    for cache_id, observed in sorted(found.items()):
        if not deletable(observed):
            outcome.refused.append(cache_id)
            continue
        if observed.status != STATUS_DELETING:
            try:
                await cloud.delete(region, cache_id)
            except EciError as error:
                if not error.is_not_found:
                    raise
                continue
            outcome.deleting.append(cache_id)
        outcome.pending = True
    return outcome
