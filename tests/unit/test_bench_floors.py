"""The benchmark's floors: what the rate limit alone allows, given the objects' arrivals."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The floor arithmetic, pure: no process, no environment of the benchmark's."""
    return importlib.import_module("benchmarks.floors")


def test_a_clump_after_a_stall_is_free_by_k_over_r_but_not_within_the_window(bench: ModuleType) -> None:
    # 100 objects a second for 2 s, nothing for 2 s, then 300 in one instant: at R = 100 the
    # k / R floor lets the stall be made up, a limiter keeping every second within R cannot.
    arrivals = {f"a{i}": i / 100 for i in range(200)}
    arrivals.update({f"b{i}": 4.0 for i in range(300)})
    k_over_r = bench.floors(list(arrivals.values()), 100)
    window = bench.window_floors(arrivals, 100)
    queue = bench.queue_floors(arrivals, 100)
    assert max(k_over_r) == pytest.approx(0.99)  # the 500th at 4.99 s, arrived at 4 s
    assert max(window.values()) == pytest.approx(2.0)  # 100 at 4 s, 100 at 5 s, 100 at 6 s
    assert max(queue.values()) == pytest.approx(2.99)  # one every 10 ms from 4 s
    assert max(window[uid] for uid in arrivals if uid.startswith("a")) == pytest.approx(0, abs=1e-9)


def test_no_floor_when_objects_arrive_slower_than_the_limit(bench: ModuleType) -> None:
    arrivals = {f"o{i}": i / 50 for i in range(500)}
    assert max(bench.floors(list(arrivals.values()), 100)) == 0
    assert max(bench.window_floors(arrivals, 100).values()) == 0
    assert max(bench.queue_floors(arrivals, 100).values()) == 0


def test_the_gap_above_the_floor_splits_into_the_first_lag_and_a_short_backlog_rate(
    bench: ModuleType,
) -> None:
    # 300 objects at once; creates from 0.5 s at 90 a second: three seconds begin with 100 or
    # more waiting (the fourth with 30), each sends 90, so the limiter falls 0.3 s behind R.
    arrivals = [0.0] * 300
    creates = [0.5 + k / 90 for k in range(300)]
    parts = bench.gap_parts(arrivals, creates, 100)
    assert parts["first_create_after_s"] == pytest.approx(0.5)
    assert parts["backlog_seconds"] == 3
    assert parts["backlog_create_rate"] == pytest.approx(90)
    assert parts["backlog_lost_s"] == pytest.approx(0.3)


def test_no_backlog_when_every_object_is_created_as_it_comes(bench: ModuleType) -> None:
    arrivals = [i / 50 for i in range(500)]
    parts = bench.gap_parts(arrivals, [t + 0.01 for t in arrivals], 100)
    assert parts["backlog_seconds"] == 0
    assert parts["backlog_lost_s"] == 0
    assert parts["backlog_create_rate"] is None


def test_the_benchmarks_import_only_names_the_package_has() -> None:
    """The benchmarks import the operator lazily, inside their runs: a name the package no
    longer has would only show in a `make bench` hours later."""
    import ast
    import importlib.util
    from pathlib import Path

    wrong = []
    for path in sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("datacache_operator"):
                module = importlib.import_module(node.module or "")
                wrong += [
                    f"{path.name}: {node.module}.{a.name}"
                    for a in node.names
                    if not hasattr(module, a.name)
                    and importlib.util.find_spec(f"{node.module}.{a.name}") is None
                ]
    assert not wrong, wrong
