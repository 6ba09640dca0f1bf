"""Every metric the Grafana dashboard and the alert rules use is one a running operator
exports (a `datacache-operator run` process against the real apiserver and the emulator)."""

from __future__ import annotations

from tests.integration.support import Kube, OperatorProcess, wait_for
from tests.integration.test_datacache_lifecycle import datacache, unique
from tests.monitoring import queries


def test_the_dashboard_and_the_rules_use_only_metrics_the_operator_exports(
    kube: Kube, operator: OperatorProcess
):
    name = unique("monitored")
    kube.apply(datacache(name))
    kube.wait_condition("datacache", name, "Ready", "True")
    ready = 'datacache_operator_objects{kind="DataCache",ready="True"} 1.0'

    def scraped_ready() -> str | None:
        text = operator.metrics()
        return text if ready in text else None

    text = wait_for(scraped_ready, what="the Ready cache in the metrics")
    exported = queries.exported_samples(text)
    for expr in queries.all_queries():
        used = queries.metric_names(expr)
        assert used and used <= exported, (
            f"{sorted(used - exported)} not exported by the operator (in {expr!r})"
        )
    assert 'datacache_operator_caches{kind="DataCache",status="Available"} 1.0' in text
    assert "datacache_operator_eci_rate_limit 50.0" in text  # DATACACHE_RATE_LIMIT of the fixture
    assert "datacache_leader 1.0" in text
    assert "datacache_operator_pods_gated 0.0" in text  # the first sweep found no waiting pod
