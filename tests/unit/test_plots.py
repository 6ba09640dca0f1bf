"""The benchmark's pictures (benchmarks/plots.py)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.plots import plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_series() -> dict:
    return {
        "title": "N=100 DataCaches, batching on",
        "ready": [[0, 0], [5, 10], [12, 60], [20, 100], [30, 100]],
        "calls_per_second": [[t, min(10.0, t * 2)] for t in range(31)],
        "rate_limit": 10.0,
        "rss_mib": [[t, 80 + t / 3] for t in range(0, 31, 5)],
    }


def test_a_run_is_drawn_into_a_png(tmp_path: Path):
    path = tmp_path / "results" / "n100.png"  # the folder is made
    plot_run(run_series(), path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000  # three panels of curves, not a blank


def test_a_run_without_samples_still_draws(tmp_path: Path):
    path = tmp_path / "empty.png"
    plot_run(
        {"title": "nothing measured", "ready": [], "calls_per_second": [], "rate_limit": 0, "rss_mib": []},
        path,
    )
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_the_pod_benchmark_is_drawn_side_by_side(tmp_path: Path):
    from benchmarks.plots import plot_pods

    path = tmp_path / "pods.png"
    curve = [[i / 50, i] for i in range(1, 1001)]
    result = {
        "pods": 1000,
        "ratio": 1.05,
        "ungate_limit_s": 6.0,
        "curves": {
            "webhook": curve,
            "by_hand": curve[::2],
            "ungated": [[i / 200, i] for i in range(1, 1001)],
        },
    }
    plot_pods(result, path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
