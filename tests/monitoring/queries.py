"""The PromQL of the Grafana dashboard and of the alert rules, for the tests that check it
against promtool and against the metrics the operator exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "eci-datacache-operator.json"
RULES = REPO / "deploy" / "prometheus" / "eci-datacache-operator.rules.yaml"
RULE_TESTS = REPO / "tests" / "monitoring" / "alerts.test.yaml"
CHART_FILES = REPO / "charts" / "eci-datacache-operator" / "files"

# Labels Prometheus adds when it scrapes (a ServiceMonitor adds the Kubernetes ones), and `le`.
SCRAPE_LABELS = {"job", "instance", "pod", "namespace", "service", "container", "endpoint", "le"}
# Grafana's variables, as a plain Prometheus would see them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".+"}

METRIC = re.compile(r"\b(datacache_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(datacache_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def load_rules() -> dict[str, Any]:
    rules: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return rules


def alerts() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"] if "alert" in rule]


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels


def dashboard_queries() -> list[str]:
    """Every expression of the dashboard (panels and variables), Grafana variables replaced."""
    dashboard = load_dashboard()
    queries = [t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if t.get("expr")]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable["type"] == "query" and query:
            queries.append(query)
    return [substitute(q) for q in queries]


def substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def rule_queries() -> list[str]:
    return [str(rule["expr"]) for group in load_rules()["groups"] for rule in group["rules"]]


def all_queries() -> list[str]:
    return dashboard_queries() + rule_queries()


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def selector_labels(expr: str) -> Iterator[tuple[str, str]]:
    """(metric, label) of every label matcher written in a metric's braces."""
    for metric, matchers in SELECTOR.findall(expr):
        for label in MATCHER.findall(matchers):
            yield metric, label


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in GROUPING.findall(expr) for label in group.split(",") if label.strip()}


def label_values_query(expr: str) -> bool:
    return expr.startswith("label_values(")


def exported_samples(exposition: str) -> set[str]:
    """The sample names a /metrics text can carry, from its `# TYPE` lines (a metric with labels
    has no sample before its first use, but its TYPE line is always there)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind in ("histogram", "summary"):
                names.update(name + suffix for suffix in ("_bucket", "_count", "_sum"))
            else:
                names.add(name)
    return names
