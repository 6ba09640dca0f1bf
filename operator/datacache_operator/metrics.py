"""Prometheus metrics of the operator (prometheus-client), fed by the cloud client's hooks
and by the controllers' passes.

Names are prefixed `datacache_operator_`. Per-object gauges (caches by cloud status,
objects not Ready by reason) come from a collector over the controllers' last results,
so a deleted object disappears from them without bookkeeping elsewhere.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Admission sits in the path of every opted-in pod create: resolve the milliseconds.
ADMISSION_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1, 5)


class ObjectStates(Collector):
    """Last known cloud status and Ready reason of every object, by kind and uid."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], tuple[str, str | None]] = {}

    def record(self, kind: str, uid: str, cloud_status: str | None, not_ready_reason: str | None) -> None:
        self._states[(kind, uid)] = (cloud_status or "Unknown", not_ready_reason)

    def forget(self, kind: str, uid: str) -> None:
        self._states.pop((kind, uid), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        caches = GaugeMetricFamily(
            "datacache_operator_caches", "Objects by kind and cloud status.", labels=["kind", "status"]
        )
        not_ready = GaugeMetricFamily(
            "datacache_operator_not_ready",
            "Objects whose Ready condition is not True, by reason.",
            labels=["kind", "reason"],
        )
        by_status = Counter((kind, status) for (kind, _), (status, _) in self._states.items())
        by_reason = Counter((kind, reason) for (kind, _), (_, reason) in self._states.items() if reason)
        for (kind, status), count in sorted(by_status.items()):
            caches.add_metric([kind, status], count)
        for (kind, reason), count in sorted(by_reason.items()):
            not_ready.add_metric([kind, reason], count)
        yield caches
        yield not_ready


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
