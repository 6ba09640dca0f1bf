"""Pictures of benchmark runs: what a run measured as curves, not a table.

`plot_run(series, path)` draws one run into a PNG with three panels sharing the time axis:
objects Ready over time, ECI calls per second against the rate limit, and the operator's RSS.
`series` is::

    {"title": str,
     "ready": [[t_seconds, count], ...],
     "calls_per_second": [[t_seconds, n], ...],
     "rate_limit": float,
     "rss_mib": [[t_seconds, mib], ...]}

Only matplotlib's object API is used (no pyplot, no global backend): safe to call from any
thread or process, with or without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

Points = Sequence[Sequence[float]]


def _draw(axes: Axes, points: Points, label: str, color: str, step: bool = False) -> None:
    if not points:
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes, color="grey")
        return
    times = [float(p[0]) for p in points]
    values = [float(p[1]) for p in points]
    if step:
        axes.step(times, values, where="post", label=label, color=color)
    else:
        axes.plot(times, values, label=label, color=color, linewidth=1.2)


def _save(figure: Figure, panels: Sequence[Axes], path: Path, legend_at: str) -> None:
    """Grid and legend on each panel, then the PNG (its folder made if missing)."""
    for axes in panels:
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc=legend_at, fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")


def plot_run(series: dict[str, Any], path: Path) -> None:
    """Write the PNG of one run to `path` (its folder is made if missing)."""
    figure = Figure(figsize=(9, 8), dpi=100, layout="constrained")
    ready_axes, calls_axes, rss_axes = figure.subplots(3, 1, sharex=True)
    figure.suptitle(str(series.get("title", "")))

    ready = series.get("ready") or []
    _draw(ready_axes, ready, "Ready", "tab:green", step=True)
    ready_axes.set_ylabel("objects Ready")
    ready_axes.set_ylim(bottom=0)

    calls = series.get("calls_per_second") or []
    _draw(calls_axes, calls, "ECI calls/s", "tab:blue")
    rate_limit = series.get("rate_limit")
    highest = max([float(rate_limit or 0)] + [float(p[1]) for p in calls])
    if highest > 0:
        calls_axes.set_ylim(0, highest * 1.15)  # room above the limit line to see a call rate reach it
    else:
        calls_axes.set_ylim(bottom=0)
    if rate_limit:
        calls_axes.axhline(
            float(rate_limit), color="tab:red", linestyle="--", label=f"rate limit ({rate_limit:g}/s)"
        )
    calls_axes.set_ylabel("ECI calls per second")

    _draw(rss_axes, series.get("rss_mib") or [], "RSS", "tab:purple")
    rss_axes.set_ylabel("RSS (MiB)")
    rss_axes.set_ylim(bottom=0)
    rss_axes.set_xlabel("seconds since the start of the run")

    _save(figure, (ready_axes, calls_axes, rss_axes), path, legend_at="best")


def plot_pods(result: dict[str, Any], path: Path) -> None:
    """The pod benchmark's run (`benchmarks/pods_bench.py`) side by side: pods Running after a
    scale, bound by the webhook and written by hand; pods released after their cache turned
    Ready, against the limit set by the apiserver's pod-patch rate."""
    curves = result.get("curves") or {}
    figure = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    scale_axes, ungate_axes = figure.subplots(1, 2)
    figure.suptitle(f"{result.get('pods')} pods, one run ({result.get('finished_at', '')})")
    _draw(scale_axes, curves.get("webhook") or [], "bound by the webhook", "tab:blue", step=True)
    _draw(scale_axes, curves.get("by_hand") or [], "written by hand", "tab:orange", step=True)
    scale_axes.set_title(f"Deployment 0 -> N: pods Running (ratio {result.get('ratio')})", fontsize="medium")
    scale_axes.set_xlabel("seconds since the scale")
    scale_axes.set_ylabel("pods Running")
    _draw(ungate_axes, curves.get("ungated") or [], "gate removed", "tab:green", step=True)
    limit = result.get("ungate_limit_s")
    if limit:
        ungate_axes.axvline(float(limit), color="tab:red", linestyle="--", label="1.2 x N / patch rate")
    ungate_axes.set_title("pods waiting for a loading cache: released", fontsize="medium")
    ungate_axes.set_xlabel("seconds since the cache turned Ready")
    ungate_axes.set_ylabel("pods ungated")
    for axes in (scale_axes, ungate_axes):
        axes.set_ylim(bottom=0)
        axes.set_xlim(left=0)
    _save(figure, (scale_axes, ungate_axes), path, legend_at="lower right")
