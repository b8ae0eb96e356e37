"""The real-client runs as a Markdown table and as a plot of latency and memory against C."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

COLUMNS = (
    "target", "C", "hs p50/p99 ms", "failed hs", "closes", "lost", "dup",
    "lat p50/p99/max ms", "MB/1000 conn", "node ms/line", "node CPU s (a+b)",
    "Redis join %core", "full GCs, longest ms",
)  # fmt: skip


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _row(run: dict[str, Any]) -> list[str]:
    if run.get("error"):
        return [run["target"], str(run["clients"]), "failed", *["-"] * (len(COLUMNS) - 3)]
    hs, lat = run["handshake_ms"], run["latency_ms"]
    gc = run["gc_send"]
    full = sum(node["counts"][2] for node in gc)
    longest = max(node["longest_s"][2] for node in gc) * 1000
    per_1000 = run["rss_per_1000_mb"]
    per_line = run["node_cpu_ms_per_line"]
    return [
        run["target"],
        str(run["clients"]),
        f"{_ms(hs['p50'])}/{_ms(hs['p99'])}",
        str(run["failed_handshakes"]),
        str(run["closes"]),
        f"{run['lost']}/{run['expected']}",
        str(run["duplicated"]),
        f"{_ms(lat['p50'])}/{_ms(lat['p99'])}/{_ms(lat['max'])}",
        "-" if per_1000 is None else f"{per_1000:.0f}",
        "-" if per_line is None else f"{per_line:.2f}",
        f"{sum(run['cpu_send_s'][:2]):.1f}",
        f"{run['redis_join_core'] * 100:.0f}",
        f"{full}, {longest:.0f}",
    ]


def table(runs: list[dict[str, Any]], header: bool = True) -> str:
    """One Markdown row per run (with a header unless ``header`` is False)."""
    lines = []
    if header:
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(run)) + " |" for run in runs]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """Latency p50/p99 and node memory per 1,000 connections against C, one line per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_target: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if not run.get("error"):
            by_target[run["target"]].append(run)
    fig, (latency, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, series in by_target.items():
        series.sort(key=lambda run: run["clients"])
        cs = [run["clients"] for run in series]
        (line,) = latency.plot(cs, [run["latency_ms"]["p99"] for run in series], marker="o",
                               label=f"{name} p99")  # fmt: skip
        latency.plot(cs, [run["latency_ms"]["p50"] for run in series], marker=".",
                     linestyle="--", color=line.get_color(), alpha=0.6)  # fmt: skip
        memory.plot(cs, [run["rss_per_1000_mb"] for run in series], marker="o", label=name)
    latency.set(xlabel="WebSocket clients (C)", ylabel="ms", yscale="log",
                title="End-to-end latency: p99 (solid), p50 (dashed)")  # fmt: skip
    memory.set(xlabel="WebSocket clients (C)", ylabel="MB per 1,000 connections",
               title="Node RSS growth per 1,000 connections (both nodes)")  # fmt: skip
    latency.legend(fontsize="small")
    memory.legend(fontsize="small")
    for axes in (latency, memory):
        axes.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
