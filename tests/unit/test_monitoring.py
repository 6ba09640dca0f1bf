"""The Grafana dashboard and the alert rules: checked and unit-tested by promtool, every query
valid PromQL on metrics and labels the operator has, and the chart's copies current.
(tests/integration/test_metrics_exported.py checks the names against a running operator.)"""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.monitoring import queries

from datacache_operator.api.datacache import cloud_statuses
from datacache_operator.metrics import Metrics


def run(promtool: str, *args: str, cwd: Path | None = None) -> str:
    result = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_alert_rules_pass_promtool_check(promtool: str):
    out = run(promtool, "check", "rules", str(queries.RULES))
    assert f"SUCCESS: {len(queries.rule_queries())} rules found" in out


def test_every_alert_passes_its_promtool_unit_tests(promtool: str):
    out = run(promtool, "test", "rules", queries.RULE_TESTS.name, cwd=queries.RULE_TESTS.parent)
    assert "SUCCESS" in out


def test_every_alert_has_a_test_that_fires_and_one_that_stays_quiet():
    tests = yaml.safe_load(queries.RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for alert in queries.alerts():
        name = alert["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"no test where {name} fires"
        assert any(not case["exp_alerts"] for case in mine), f"no test where {name} stays quiet"


def test_every_alert_says_how_bad_it_is_and_what_to_do():
    names = [alert["alert"] for alert in queries.alerts()]
    assert len(names) == len(set(names))
    for alert in queries.alerts():
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert alert.get("for"), f"{alert['alert']} fires on a single evaluation"
        annotations = alert["annotations"]
        assert annotations["summary"] and len(annotations["description"]) > 200, alert["alert"]


def test_the_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path):
    """promtool parses every dashboard query as a recording rule (Grafana's variables
    replaced by what a plain Prometheus would get)."""
    expressions = [q for q in queries.dashboard_queries() if not queries.label_values_query(q)]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": q} for i, q in enumerate(expressions)],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(expressions)} rules found" in run(promtool, "check", "rules", str(path))


def every_metric_used() -> Metrics:
    """A registry in which every metric has at least one sample."""
    metrics = Metrics()
    metrics.on_call("CreateDataCache", "cn-hangzhou", "OK", 0.2)
    metrics.on_rate_limit_wait("cn-hangzhou", 0.1)
    with metrics.reconcile("DataCache"):
        pass
    stalled = {
        "status": "Failed",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Failed"},
            {"type": "Stalled", "status": "True", "reason": "Failed"},
        ],
    }
    metrics.objects.record("DataCache", "uid", stalled, cloud_statuses(stalled), "ml/qwen")
    metrics.admissions.labels("bound").inc()
    metrics.admission_seconds.observe(0.01)
    metrics.on_pod_ungated(30)
    metrics.on_pods_waiting(1, 60)
    metrics.eci_rate_limit.set(10)
    metrics.set_leader(True)
    return metrics


def test_the_dashboard_and_the_rules_use_only_metrics_and_labels_the_operator_has():
    exposition = generate_latest(every_metric_used().registry).decode()
    exported = queries.exported_samples(exposition)
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    for expr in queries.all_queries():
        used = queries.metric_names(expr)
        assert used, f"no operator metric in {expr!r}"
        assert used <= exported, f"{sorted(used - exported)} not exported (in {expr!r})"
        for metric, label in queries.selector_labels(expr):
            assert label in labels[metric] | queries.SCRAPE_LABELS, f"{metric} has no label {label!r}"
        known = set().union(*(labels[m] for m in used)) | queries.SCRAPE_LABELS
        assert queries.grouping_labels(expr) <= known, f"grouping by a label none of {used} has: {expr!r}"


def test_the_dashboard_is_laid_out_on_grafanas_grid_and_uses_its_data_source_variable():
    dashboard = queries.load_dashboard()
    assert dashboard["uid"] == "eci-datacache-operator"
    taken: set[tuple[int, int]] = set()
    ids = []
    for panel in queries.panels(dashboard):
        ids.append(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["y"] + dy, grid["x"] + dx) for dy in range(grid["h"]) for dx in range(grid["w"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["description"], panel["title"]
            assert all('job=~"$job"' in t["expr"] for t in panel["targets"]), panel["title"]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("source", [queries.DASHBOARD, queries.RULES], ids=lambda p: p.name)
def test_the_chart_ships_the_same_dashboard_and_rules(source: Path):
    assert filecmp.cmp(source, queries.CHART_FILES / source.name, shallow=False), "run `make chart-sync`"
