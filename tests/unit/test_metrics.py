"""Metrics as Prometheus scrapes them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from tests.unit.reconcile.test_binding_decisions import HERE, bind, datacache, pod

from datacache_operator.api import datacache as datacache_api
from datacache_operator.api import replication as replication_api
from datacache_operator.api.binding import GATED_LABEL
from datacache_operator.controllers.pods import PodBinder
from datacache_operator.metrics import Metrics
from datacache_operator.settings import OperatorSettings


def record(metrics: Metrics, kind: str, uid: str, status: dict[str, object], name: str) -> None:
    """What a pass records: the status, and the cloud statuses its kind reads from it."""
    kinds = {"DataCache": datacache_api, "DataCacheReplication": replication_api}
    metrics.objects.record(kind, uid, status, kinds[kind].cloud_statuses(status), name)


def scrape(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def lines(metrics: Metrics) -> set[str]:
    return set(scrape(metrics).splitlines())


def test_cloud_hooks_count_calls_by_outcome():
    metrics = Metrics()
    metrics.on_call("DescribeDataCaches", "cn-hangzhou", "OK", 0.02)
    metrics.on_call("DescribeDataCaches", "cn-hangzhou", "Throttling.User", 0.01)
    metrics.on_rate_limit_wait("cn-hangzhou", 0.3)
    text = scrape(metrics)
    ok = 'datacache_operator_eci_calls_total{action="DescribeDataCaches",outcome="OK",region="cn-hangzhou"} 1.0'
    assert ok in text
    assert 'outcome="Throttling.User"' in text
    assert 'datacache_operator_rate_limit_wait_seconds_count{region="cn-hangzhou"} 1.0' in text


def test_reconcile_passes_are_timed_and_counted():
    metrics = Metrics()
    with metrics.reconcile("DataCache"):
        pass
    with pytest.raises(RuntimeError), metrics.reconcile("DataCache"):
        raise RuntimeError("boom")
    text = scrape(metrics)
    assert 'datacache_operator_reconciles_total{kind="DataCache",result="ok"} 1.0' in text
    assert 'datacache_operator_reconciles_total{kind="DataCache",result="error"} 1.0' in text
    assert 'datacache_operator_reconcile_duration_seconds_count{kind="DataCache"} 2.0' in text


def condition(type_: str, status: str, reason: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": ""}


def cache_status(
    cloud: str, ready: str = "True", reason: str = "Available", stalled: str | None = None
) -> dict:
    conditions = [condition("Ready", ready, reason)]
    if stalled:
        conditions.append(condition("Stalled", "True", stalled))
    return {"status": cloud, "conditions": conditions}


def test_object_gauges_count_by_status_and_reason_and_forget_deleted_objects():
    metrics = Metrics()
    record(metrics, "DataCache", "a", cache_status("Loading", "False", "Loading"), "ml/a")
    record(metrics, "DataCache", "b", cache_status("Available"), "ml/b")
    record(metrics, "DataCache", "a", cache_status("Available"), "ml/a")
    text = scrape(metrics)
    assert 'datacache_operator_caches{kind="DataCache",status="Available"} 2.0' in text
    assert 'datacache_operator_objects{kind="DataCache",ready="True"} 2.0' in text
    assert "datacache_operator_not_ready{" not in text  # a reason no object has any more is gone
    record(metrics, "DataCache", "c", cache_status("Failed", "False", "Failed", stalled="Failed"), "ml/c")
    metrics.objects.forget("DataCache", "b")
    metrics.objects.forget("DataCache", "never-seen")
    assert {
        'datacache_operator_caches{kind="DataCache",status="Available"} 1.0',
        'datacache_operator_objects{kind="DataCache",ready="False"} 1.0',
        'datacache_operator_not_ready{kind="DataCache",reason="Failed"} 1.0',
        'datacache_operator_stalled{kind="DataCache",reason="Failed"} 1.0',
        'datacache_operator_stalled_object{kind="DataCache",object="ml/c",reason="Failed"} 1.0',
    } <= lines(metrics)
    metrics.objects.forget("DataCache", "c")
    text = scrape(metrics)
    assert "datacache_operator_stalled{" not in text
    assert "datacache_operator_stalled_object{" not in text


def test_snapshot_gib_idle_caches_and_revisions_are_counted_per_namespace():
    metrics = Metrics()
    two = {
        **cache_status("Available"),
        "dataCacheId": "edc-2",
        "size": 40,
        "currentRevision": "r2",
        "revisions": [
            {"name": "r1", "dataCacheId": "edc-1", "size": 20},  # superseded, a pod still on it
            {"name": "r2", "dataCacheId": "edc-2", "size": 40},
        ],
    }
    record(metrics, "DataCache", "a", two, "ml/a")
    record(
        metrics, "DataCache", "b", {**cache_status("Available"), "dataCacheId": "edc-3", "size": 20}, "ml/b"
    )
    record(metrics, "DataCache", "c", cache_status("Available", "False", "Idle"), "web/c")  # scaled to zero
    assert {
        'datacache_operator_snapshot_gib{kind="DataCache",namespace="ml"} 80.0',
        'datacache_operator_idle_caches{kind="DataCache",namespace="web"} 1.0',
        'datacache_operator_cache_revisions{kind="DataCache",revisions="2"} 1.0',
        'datacache_operator_cache_revisions{kind="DataCache",revisions="1"} 1.0',
    } <= lines(metrics)
    record(metrics, "DataCache", "a", {**two, "revisions": two["revisions"][1:]}, "ml/a")  # r1 deleted
    assert 'datacache_operator_snapshot_gib{kind="DataCache",namespace="ml"} 60.0' in lines(metrics)
    metrics.objects.forget("DataCache", "c")
    assert "datacache_operator_idle_caches{" not in scrape(metrics)


def test_a_replication_counts_each_copy_by_its_cloud_status():
    metrics = Metrics()
    waiting = {
        "readyDestinations": "0/2",
        "destinations": None,
        "conditions": [condition("Ready", "False", "SourceNotReady")],
    }
    record(metrics, "DataCacheReplication", "r", waiting, "ml/r")
    assert 'datacache_operator_caches{kind="DataCacheReplication"' not in scrape(metrics)
    copies = {
        "readyDestinations": "1/2",
        "destinations": [
            {"region": "cn-beijing", "status": "Available"},
            {"region": "cn-shanghai", "status": "Failed"},
        ],
        "conditions": [condition("Ready", "False", "CopyFailed"), condition("Stalled", "True", "CopyFailed")],
    }
    record(metrics, "DataCacheReplication", "r", copies, "ml/r")
    text = scrape(metrics)
    assert 'datacache_operator_caches{kind="DataCacheReplication",status="Available"} 1.0' in text
    assert 'datacache_operator_caches{kind="DataCacheReplication",status="Failed"} 1.0' in text
    assert 'datacache_operator_not_ready{kind="DataCacheReplication",reason="SourceNotReady"}' not in text
    assert (
        'datacache_operator_stalled_object{kind="DataCacheReplication",object="ml/r",reason="CopyFailed"} 1.0'
        in text
    )


def test_object_gauges_cost_nothing_per_object_at_scrape_time():
    """10,000 objects in a few states are a handful of series, and a scrape stays fast."""
    metrics = Metrics()
    for i in range(10_000):
        status = cache_status("Available") if i % 10 else cache_status("Loading", "False", "Loading")
        record(metrics, "DataCache", f"uid-{i}", status, f"ml/c{i}")
        record(metrics, "DataCache", f"uid-{i}", status, f"ml/c{i}")  # unchanged: no work
    started = time.perf_counter()
    text = scrape(metrics)
    assert time.perf_counter() - started < 0.5
    object_lines = [
        line for line in text.splitlines() if line.startswith("datacache_operator_") and "kind=" in line
    ]
    assert len(object_lines) == 5  # caches x2, objects x2, not_ready x1
    assert 'datacache_operator_objects{kind="DataCache",ready="False"} 1000.0' in text


def test_the_rate_limit_and_gated_pods_are_exported():
    metrics = Metrics()
    metrics.eci_rate_limit.set(10)
    metrics.on_pods_waiting(3, 125.0)
    metrics.on_pod_ungated(42.0)
    assert {
        "datacache_operator_eci_rate_limit 10.0",
        "datacache_operator_pods_gated 3.0",
        "datacache_operator_pods_gated_longest_seconds 125.0",
        "datacache_operator_pods_ungated_total 1.0",
        'datacache_operator_pod_gated_duration_seconds_bucket{le="60.0"} 1.0',
        'datacache_operator_pod_gated_duration_seconds_bucket{le="30.0"} 0.0',
    } <= lines(metrics)


async def test_the_pod_binder_reports_how_long_pods_waited():
    """A sweep reports the pods still gated and the longest wait; an ungated pod its wait."""
    created = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    pods = []
    for name in ("ready", "loading"):
        gated = bind(pod(f"{name}:/data"), datacache(name, ready=False))
        gated["metadata"].update(
            name=f"pod-{name}", namespace="ml", uid=f"uid-{name}", creationTimestamp=created
        )
        pods.append(gated)
    caches = {"ready": datacache("ready"), "loading": datacache("loading", ready=False)}

    async def list_pods(namespace, labels, fields):
        return [p for p in pods if p["metadata"]["labels"].get(GATED_LABEL) == "true"]

    async def patch_pod(namespace, name, patch):
        return True

    async def read_object(plural, namespace, name):
        return caches.get(name) if plural == "datacaches" else None

    async def patch_status(*args):
        pass

    ungated, waiting = [], []
    binder = PodBinder(
        OperatorSettings(default_region=HERE),
        list_pods,
        patch_pod,
        read_object,
        patch_status,
        lambda *args: None,
        on_ungated=ungated.append,
        on_waiting=lambda count, longest: waiting.append((count, longest)),
    )
    assert await binder.check_waiting(["ml"]) == 1
    assert waiting == []  # one namespace is not a sweep
    assert await binder.check_waiting([None], every_namespace=True) == 1  # the patch is faked
    assert len(ungated) == 2 and all(590 < seconds < 700 for seconds in ungated)
    ((count, longest),) = waiting
    assert count == 1 and 590 < longest < 700
