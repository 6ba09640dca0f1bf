"""Metrics as Prometheus scrapes them."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from datacache_operator.metrics import Metrics


def scrape(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


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


def test_object_gauges_follow_the_last_state_and_forget_deleted_objects():
    metrics = Metrics()
    metrics.objects.record("DataCache", "a", "Loading", "Loading")
    metrics.objects.record("DataCache", "b", "Available", None)
    metrics.objects.record("DataCache", "a", "Available", None)
    text = scrape(metrics)
    assert 'datacache_operator_caches{kind="DataCache",status="Available"} 2.0' in text
    assert "datacache_operator_not_ready{" not in text
    metrics.objects.record("DataCache", "c", "Failed", "Failed")
    metrics.objects.forget("DataCache", "b")
    text = scrape(metrics)
    assert 'datacache_operator_caches{kind="DataCache",status="Available"} 1.0' in text
    assert 'datacache_operator_not_ready{kind="DataCache",reason="Failed"} 1.0' in text
