"""A third kind is one table entry and one resource manager: a cluster-scoped toy whose cloud
resource lives in memory is registered from its `KindSpec` alone and driven by the runtime and
the generic sync through create, update, drift (changed and deleted outside the operator) and
delete. Nothing of the generic layers changes for it."""

from __future__ import annotations

import itertools
import types
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import prometheus_client
import pytest

from datacache_operator import kube, runtime
from datacache_operator.api.common import OWNER_UID_TAG
from datacache_operator.cloud.models import ObservedCache
from datacache_operator.controllers.base import PassResult, PollingController
from datacache_operator.controllers.sync import CloudRecord, ResourceManager
from datacache_operator.metrics import Metrics
from datacache_operator.reconcile.common import ConditionValue, Event, client_token
from datacache_operator.reconcile.ownership import Identity
from datacache_operator.reconcile.sync import CacheFields, Verb
from datacache_operator.settings import OperatorSettings

SETTINGS = OperatorSettings(batching=False, poll_interval_loading=0.5, poll_interval_stable=3, poll_jitter=0)


class Store:
    """The toy's cloud: resources by id, in memory; a ClientToken makes one resource once."""

    def __init__(self) -> None:
        self.items: dict[str, ObservedCache] = {}
        self.calls: list[str] = []
        self._tokens: dict[str, str] = {}
        self._ids = itertools.count(1)

    def create(self, token: str, name: str, tags: Mapping[str, str]) -> str:
        self.calls.append("create")
        if token not in self._tokens:
            new_id = self._tokens[token] = f"toy-{next(self._ids)}"
            self.items[new_id] = ObservedCache(
                data_cache_id=new_id, region="here", status="Available", name=name, tags=dict(tags)
            )
        return self._tokens[token]


class ToyManager(ResourceManager[Verb]):
    """The whole kind-specific part: decide, create, and what each step records."""

    def __init__(
        self, store: Store, status: dict[str, Any], meta: Mapping[str, Any], spec: Mapping[str, Any]
    ):
        super().__init__(
            cloud=None,
            region="here",
            record=CloudRecord(status, counter="creates"),
            identity=Identity("toy-cluster", "", meta["name"], meta["uid"]),
        )  # type: ignore[arg-type]
        self.store, self.status, self.spec = store, status, spec

    def decide(self, observed: ObservedCache | None, recovered: bool) -> Verb:
        if self.record.id is None:
            return Verb.CREATE if recovered else Verb.RECOVER
        if observed is None:
            return Verb.FORGET
        return Verb.UPDATE if self.delta(observed) else Verb.SETTLE

    def verb(self, step: Verb) -> Verb:
        return step

    def wanted(self) -> CacheFields:
        return CacheFields(name=self.spec["name"], tags={OWNER_UID_TAG: self.owner_uid})

    def client_token(self, creates: int) -> str:
        return client_token(self.owner_uid, creates)

    async def create(self, client_token: str) -> str:
        wanted = self.wanted()
        return self.store.create(client_token, wanted.name or "", wanted.tags or {})

    async def read_one(self, cache_id: str) -> ObservedCache | None:
        self.store.calls.append("read")
        return self.store.items.get(cache_id)

    async def find_own(self, now: datetime) -> ObservedCache | None:
        self.store.calls.append("find")
        owned = [i for i in self.store.items.values() if i.tags.get(OWNER_UID_TAG) == self.owner_uid]
        return owned[0] if owned else None

    async def update(self, cache_id: str, sent: CacheFields) -> None:
        self.store.calls.append(f"update {sent.describe()}")
        changes = {"name": sent.name, "tags": sent.tags}
        item = self.store.items[cache_id]
        self.store.items[cache_id] = item.model_copy(
            update={k: v for k, v in changes.items() if v is not None}
        )

    async def delete(self, cache_id: str) -> None:
        self.store.calls.append("delete")
        self.store.items.pop(cache_id, None)

    def created(self, new_id: str) -> None:
        self.events.append(Event("Normal", "Created", f"Created {new_id}."))

    def updating(self, sent: CacheFields) -> None:
        self.events.append(Event("Normal", "Updating", f"Updating {sent.describe()}."))

    def forgotten(self, gone_id: str) -> None:
        self.events.append(Event("Warning", "Missing", f"{gone_id} is gone."))

    def replacing(self, step: Verb, old_id: str) -> None:
        raise AssertionError("the toy never replaces")

    def settled(self, step: Verb, observed: ObservedCache | None) -> None:
        assert observed is not None
        self.status.update(phase="Built", name=observed.name)


class ToyController(PollingController):
    def __init__(self, store: Store) -> None:
        super().__init__(SETTINGS, cloud=None)
        self.store = store

    async def reconcile(self, body: Mapping[str, Any]) -> PassResult:
        meta, status, events = body["metadata"], self.current_status(body), []
        manager = ToyManager(self.store, status, meta, body["spec"])
        step, _ = await self.sync(manager, self.clock())
        events += manager.events
        ready = "True" if step == Verb.SETTLE else "False"
        values = [ConditionValue("Ready", ready, "Built" if ready == "True" else str(step), "")]
        return self._conclude(meta["uid"], status, values, meta.get("generation"), self.clock(), 1.0, events)

    async def _finalize(self, body: Mapping[str, Any]) -> tuple[bool, list[Event], dict[str, Any] | None]:
        manager = ToyManager(self.store, dict(self.current_status(body)), body["metadata"], body["spec"])
        known = manager.record.id
        if known is not None and await manager.read_one(known) is not None:
            await manager.delete(known)
            return False, [Event("Normal", "Deleting", f"Deleting {known}.")], None
        return True, [], None


class Apiserver:
    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.finalizers: list[Any] = []
        self.events: list[str] = []

    async def patch_object(self, plural: str, namespace: str | None, name: str, operations: Any) -> bool:
        assert (plural, namespace) == ("toys", None)
        self.finalizers.append(operations[-1].get("value"))
        return True

    async def patch_status(self, plural: str, namespace: str | None, name: str, status: Any) -> None:
        assert (plural, namespace) == ("toys", None)
        self.statuses.append(status)

    def post_event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.events.append(reason)


class Body(dict):  # type: ignore[type-arg]
    @property
    def metadata(self) -> dict[str, Any]:
        return self["metadata"]  # type: ignore[no-any-return]


def toy(generation: int, name: str, status: Mapping[str, Any], deleted: bool = False) -> Body:
    meta: dict[str, Any] = {"uid": "u1", "name": "qwen", "generation": generation, "resourceVersion": "1"}
    meta["finalizers"] = [runtime.FINALIZER]
    if deleted:
        meta["deletionTimestamp"] = "2026-12-06T00:00:00Z"
    return Body(
        apiVersion="eci.datacache.dev/v1alpha1",
        kind="Toy",
        metadata=meta,
        spec={"name": name},
        status=dict(status),
    )


@pytest.fixture
def apiserver(monkeypatch: pytest.MonkeyPatch) -> Apiserver:
    monkeypatch.setattr(runtime, "start_background", lambda shared: None)
    fake = Apiserver()
    monkeypatch.setattr(kube, "patch_object", fake.patch_object)
    monkeypatch.setattr(kube, "patch_status", fake.patch_status)
    monkeypatch.setattr(runtime, "post_event", fake.post_event)
    return fake


async def test_a_cluster_scoped_kind_with_an_in_memory_resource_goes_through_its_whole_life(
    apiserver: Apiserver,
) -> None:
    entry_of_the_table = runtime.KindSpec(
        kind="Toy",
        plural="toys",
        cloud_side="the toy is",
        cloud_statuses=lambda status: (status.get("phase") or "Unknown",),
        usable_change=lambda before, after, region: (False, False),
    )
    store = Store()
    shared = runtime.prepare(
        SETTINGS, Metrics(), {"toys": runtime.Registered(entry_of_the_table, ToyController(store))}
    )
    memo = types.SimpleNamespace(shared=shared)

    async def pass_of(body: Body, event: str = "MODIFIED") -> dict[str, Any]:
        runtime.observe("toys", body, event, memo)
        await runtime.run_pass(shared.kinds["toys"], shared, shared.scheduler.get("u1"))
        await shared.status_writer.drain()
        return apiserver.statuses[-1] if apiserver.statuses else {}

    # create: one resource, recorded, Ready once it is there
    status = await pass_of(toy(1, "first", {}), "ADDED")
    assert list(store.items) == ["toy-1"] and store.calls == ["find", "create"]
    assert (status["dataCacheId"], status["creates"]) == ("toy-1", 1)
    status = await pass_of(toy(1, "first", status))
    assert (status["phase"], status["conditions"][0]["status"]) == ("Built", "True")
    metrics = prometheus_client.generate_latest(shared.metrics.registry)
    assert b'datacache_operator_caches{kind="Toy",status="Built"} 1.0' in metrics

    # update: a new spec sends only what differs
    store.calls.clear()
    status = await pass_of(toy(2, "second", status))
    assert store.calls == ["read", "update name"] and store.items["toy-1"].name == "second"
    assert status["observedGeneration"] == 2

    # drift: a field changed outside the operator is put back; a resource deleted outside is made again
    store.items["toy-1"] = store.items["toy-1"].model_copy(update={"tags": {}})
    store.calls.clear()
    status = await pass_of(toy(2, "second", status))
    assert store.calls == ["read", "update tags"]
    del store.items["toy-1"]
    store.calls.clear()
    status = await pass_of(toy(2, "second", status))
    assert store.calls == ["read", "find", "create"] and list(store.items) == ["toy-2"]
    assert (status["dataCacheId"], status["creates"]) == ("toy-2", 2)
    assert {"Created", "Updating", "Missing"} <= set(apiserver.events)

    # delete: the resource goes, then the finalizer
    await pass_of(toy(2, "second", status, deleted=True))
    assert store.items == {} and apiserver.finalizers == []  # kept while the resource may exist
    await pass_of(toy(2, "second", status, deleted=True))
    assert apiserver.finalizers[-1] == []
