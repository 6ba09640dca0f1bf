"""Prometheus metrics of the operator (prometheus-client), fed by the cloud client's hooks
and by the controllers' passes.

Names are prefixed `datacache_operator_` (but `datacache_leader`). The object gauges
(caches by cloud status, objects by Ready status, not-Ready and Stalled reasons) are counts
that each pass updates when its object's status changes, and a deletion forgets; the pod
binder's sweep sets the gated-pod gauges. The Grafana dashboard (deploy/grafana/) and the
alert rules (deploy/prometheus/) use only these names (tests/unit/test_monitoring.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Admission sits in the path of every opted-in pod create: resolve the milliseconds.
ADMISSION_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1, 5)
# A pod waits on its gate for as long as its caches take to load: seconds to hours.
GATED_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200)


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


@dataclass(frozen=True)
class ObjectState:
    """What the gauges count of one object, taken from the status its last pass wrote."""

    caches: tuple[str, ...]  # cloud status of each cache: a DataCache's own, a replication's copies
    ready: str  # the Ready condition's status: True, False or Unknown
    not_ready_reason: str | None
    stalled_reason: str | None
    name: str  # namespace/name, only exported while Stalled
    snapshot_gib: int = 0  # the size of every cloud cache of its revisions that exists
    revisions: int = 0  # the revisions it holds (a DataCache)

    @property
    def namespace(self) -> str:
        return self.name.split("/", 1)[0] if "/" in self.name else ""

    @classmethod
    def of(cls, status: Mapping[str, Any], caches: tuple[str, ...], name: str) -> ObjectState:
        ready = _condition(status, "Ready")
        stalled = _condition(status, "Stalled")
        ready_status = ready.get("status") or "Unknown"
        held = {
            e.get("dataCacheId"): e.get("size") for e in status.get("revisions") or [] if e.get("dataCacheId")
        }
        if status.get("dataCacheId"):
            held[status["dataCacheId"]] = status.get("size")
        return cls(
            caches=caches,
            ready=ready_status,
            not_ready_reason=None if ready_status == "True" else ready.get("reason"),
            stalled_reason=(stalled.get("reason") or "Unknown") if stalled.get("status") == "True" else None,
            name=name,
            snapshot_gib=sum(int(size or 0) for size in held.values()),
            revisions=len(status.get("revisions") or []) or (1 if status.get("dataCacheId") else 0),
        )


class ObjectStates(Collector):
    """Counts of objects (by kind) by cloud status, Ready status, not-Ready reason and
    Stalled reason, kept up to date as each pass records its object's status: a scrape
    costs the number of distinct label sets, not the number of objects (10,000 objects
    are a few dozen series). Only Stalled objects are named, one series each: they are
    the ones someone has to act on."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], ObjectState] = {}
        self._caches: Counter[tuple[str, str]] = Counter()
        self._ready: Counter[tuple[str, str]] = Counter()
        self._not_ready: Counter[tuple[str, str]] = Counter()
        self._stalled: Counter[tuple[str, str]] = Counter()
        self._stalled_objects: dict[tuple[str, str], ObjectState] = {}
        self._snapshot_gib: Counter[tuple[str, str]] = Counter()  # (kind, namespace)
        self._idle: Counter[tuple[str, str]] = Counter()  # (kind, namespace)
        self._revisions: Counter[tuple[str, str]] = Counter()  # (kind, revisions held)

    def record(
        self, kind: str, uid: str, status: Mapping[str, Any], caches: tuple[str, ...], name: str
    ) -> None:
        """The status an object's pass wrote, the cloud status of each of its caches (the kind
        says which: `KindSpec.cloud_statuses`) and its namespace/name."""
        state = ObjectState.of(status, caches, name)
        old = self._states.get((kind, uid))
        if old == state:
            return
        if old is not None:
            self._count(kind, old, -1)
        self._states[(kind, uid)] = state
        self._count(kind, state, 1)
        if state.stalled_reason:
            self._stalled_objects[(kind, uid)] = state
        else:
            self._stalled_objects.pop((kind, uid), None)

    def forget(self, kind: str, uid: str) -> None:
        old = self._states.pop((kind, uid), None)
        if old is not None:
            self._count(kind, old, -1)
        self._stalled_objects.pop((kind, uid), None)

    def _count(self, kind: str, state: ObjectState, delta: int) -> None:
        changes = [(self._caches, status) for status in state.caches]
        changes.append((self._ready, state.ready))
        if state.not_ready_reason:
            changes.append((self._not_ready, state.not_ready_reason))
        if state.stalled_reason:
            changes.append((self._stalled, state.stalled_reason))
        if state.not_ready_reason == "Idle":
            changes.append((self._idle, state.namespace))
        if state.revisions:
            changes.append((self._revisions, str(state.revisions)))
        if state.snapshot_gib:
            self._snapshot_gib[(kind, state.namespace)] += delta * state.snapshot_gib
            if self._snapshot_gib[(kind, state.namespace)] <= 0:
                del self._snapshot_gib[(kind, state.namespace)]
        for counts, label in changes:
            counts[(kind, label)] += delta
            if counts[(kind, label)] <= 0:
                del counts[(kind, label)]  # a label set no object has any more disappears

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = [
            ("datacache_operator_caches", "Cloud caches by kind and cloud status (a DataCache's own "
             "cache, each copy of a DataCacheReplication).", "status", self._caches),
            ("datacache_operator_objects", "Objects by kind and status of their Ready condition.",
             "ready", self._ready),
            ("datacache_operator_not_ready", "Objects whose Ready condition is not True, by reason.",
             "reason", self._not_ready),
            ("datacache_operator_stalled", "Objects with Stalled=True (only a spec change or a "
             "reconcile request helps), by reason.", "reason", self._stalled),
            ("datacache_operator_snapshot_gib", "GiB of cloud caches held (billed for their snapshot), "
             "every revision of each DataCache, by namespace.", "namespace", self._snapshot_gib),
            ("datacache_operator_idle_caches", "DataCaches scaled to zero for want of use "
             "(expireAfterUnused), by namespace.", "namespace", self._idle),
            ("datacache_operator_cache_revisions", "DataCaches by how many revisions they hold "
             "(the current one, one being built, superseded ones).", "revisions", self._revisions),
        ]  # fmt: skip
        for name, documentation, label, counts in families:
            family = GaugeMetricFamily(name, documentation, labels=["kind", label])
            for labels, count in sorted(counts.items()):
                family.add_metric(list(labels), count)
            yield family
        stalled = GaugeMetricFamily(
            "datacache_operator_stalled_object",
            "1 for each Stalled object, named (namespace/name) with its Stalled reason.",
            labels=["kind", "object", "reason"],
        )
        for (kind, _), state in sorted(self._stalled_objects.items()):
            stalled.add_metric([kind, state.name, state.stalled_reason or "Unknown"], 1)
        yield stalled


class Metrics:
    """All metrics in their own registry (tests build as many as they like)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = PromCounter(
            "datacache_operator_reconciles",
            "Reconcile passes by kind and result.",
            ["kind", "result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "datacache_operator_reconcile_duration_seconds",
            "Duration of one reconcile pass.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.eci_calls = PromCounter(
            "datacache_operator_eci_calls",
            "ECI calls by action, region and outcome code (OK on success).",
            ["action", "region", "outcome"],
            registry=self.registry,
        )
        self.eci_seconds = Histogram(
            "datacache_operator_eci_call_duration_seconds",
            "Latency of ECI calls.",
            ["action", "region"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rate_limit_wait = Histogram(
            "datacache_operator_rate_limit_wait_seconds",
            "Time calls waited for the per-region rate limiter.",
            ["region"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.admissions = PromCounter(
            "datacache_operator_pod_admissions",
            "Pods the webhook answered, by result: bound, gated (bound and held until the caches are "
            "Ready), denied, error.",
            ["result"],
            registry=self.registry,
        )
        self.admission_seconds = Histogram(
            "datacache_operator_pod_admission_duration_seconds",
            "Time the webhook took to answer one pod.",
            buckets=ADMISSION_BUCKETS,
            registry=self.registry,
        )
        self.pods_ungated = PromCounter(
            "datacache_operator_pods_ungated",
            "Pods whose scheduling gate the operator removed (every cache Ready).",
            registry=self.registry,
        )
        self.pod_gated_seconds = Histogram(
            "datacache_operator_pod_gated_duration_seconds",
            "How long each pod the operator ungated had waited on the gate (from its creation).",
            buckets=GATED_BUCKETS,
            registry=self.registry,
        )
        self.pods_gated = Gauge(
            "datacache_operator_pods_gated",
            "Pods waiting on the scheduling gate for their caches, at the last sweep.",
            registry=self.registry,
        )
        self.pods_gated_longest = Gauge(
            "datacache_operator_pods_gated_longest_seconds",
            "Seconds the longest-waiting gated pod had waited (from its creation) at the last sweep; "
            "0 when none waits.",
            registry=self.registry,
        )
        self.eci_rate_limit = Gauge(
            "datacache_operator_eci_rate_limit",
            "ECI requests per second the rate limiter allows per region (DATACACHE_RATE_LIMIT).",
            registry=self.registry,
        )
        self.status_writes_pending = Gauge(
            "datacache_operator_status_writes_pending",
            "Objects whose newest status the passes have computed but not yet written.",
            registry=self.registry,
        )
        self.leader = Gauge(
            "datacache_leader",
            "1 while this replica holds the leader Lease (or runs without leader election), else 0.",
            registry=self.registry,
        )
        self.leading = False
        self.objects = ObjectStates()
        self.registry.register(self.objects)

    def set_leader(self, leading: bool) -> None:
        self.leading = leading
        self.leader.set(1 if leading else 0)

    # --- the cloud client's hooks (datacache_operator.cloud.client.CloudHooks) ------------
    def on_call(self, action: str, region: str, outcome: str, seconds: float) -> None:
        self.eci_calls.labels(action, region, outcome).inc()
        self.eci_seconds.labels(action, region).observe(seconds)

    def on_rate_limit_wait(self, region: str, seconds: float) -> None:
        self.rate_limit_wait.labels(region).observe(seconds)

    # --- the pod binder's hooks -----------------------------------------------------------
    def on_pod_ungated(self, waited_seconds: float) -> None:
        self.pods_ungated.inc()
        self.pod_gated_seconds.observe(max(0.0, waited_seconds))

    def on_pods_waiting(self, count: int, longest_seconds: float) -> None:
        self.pods_gated.set(count)
        self.pods_gated_longest.set(max(0.0, longest_seconds))

    # --- reconcile passes ------------------------------------------------------------------
    @contextmanager
    def reconcile(self, kind: str) -> Iterator[dict[str, str]]:
        """Times a pass; the caller may set outcome["result"] (default: ok, or error on raise)."""
        outcome = {"result": "ok"}
        started = time.monotonic()
        try:
            yield outcome
        except BaseException:
            outcome["result"] = "error"
            raise
        finally:
            self.reconciles.labels(kind, outcome["result"]).inc()
            self.reconcile_seconds.labels(kind).observe(time.monotonic() - started)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's metrics port
        start_http_server(port, addr=address, registry=self.registry)


class HealthServer:
    """`/healthz` on the health port, served by every replica whether it leads or not (so
    readiness never depends on leadership): 200 while the event loop answers."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._runner: Any = None

    async def _healthz(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"status": "ok", "leader": self.metrics.leading})

    async def start(self, port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's probe port
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, address, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
