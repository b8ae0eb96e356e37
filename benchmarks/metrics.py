"""Turning what the sender, the nodes and Redis reported into one flat record per run."""

from __future__ import annotations

import math
from array import array
from typing import Any


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds (nearest rank), None when there are no samples."""
    if not samples:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))] * 1000

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": ordered[-1] * 1000}


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _per_op(value: float, ops: int) -> float | None:
    return value / ops if ops else None


def redis_figures(delta: dict[str, Any], ops: int) -> dict[str, Any]:
    """Server-side cost per operation: commands (Lua's included), bytes, CPU."""
    top = sorted(delta["by_command"].items(), key=lambda item: -item[1])[:6]
    return {
        "commands_per_op": _per_op(delta["commands"], ops),
        "by_command_per_op": {name: round(calls / ops, 3) for name, calls in top} if ops else {},
        "bytes_in_per_op": _per_op(delta["net_in"], ops),
        "bytes_out_per_op": _per_op(delta["net_out"], ops),
        "cpu_s": delta["cpu"],
    }


def delivery_record(result: dict[str, Any], members_per_target: list[int]) -> dict[str, Any]:
    """Figures of a burst or paced phase: rates, loss, order, latency, cost per group_send."""
    sent, nodes = result["sent"], result["nodes"]
    expected = sum(a * m for a, m in zip(sent["accepted"], members_per_target, strict=True))
    unique = sum(node["unique"] for node in nodes)
    last = max((node["last"] for node in nodes if node["first"] is not None), default=None)
    window = (last - sent["started"]) if last is not None else None
    ops = sent["sends"] + sent["ends"]
    latencies: list[float] = []
    for node in nodes:
        latencies.extend(array("d", node["latencies"]))
    node_cpu = [node["cpu"] for node in nodes]
    node_rates = [
        node["unique"] / (node["last"] - sent["started"]) if node["first"] else None
        for node in nodes
    ]
    node_efficiency = [node["unique"] / node["cpu"] if node["cpu"] else None for node in nodes]
    return {
        "sends": sent["sends"],
        "sends_per_s": sent["sends"] / (sent["finished"] - sent["started"]),
        "msgs_per_s": sent["sends"] / window if window else None,
        "deliveries": unique,
        "deliveries_per_s": unique / window if window else None,
        "node_deliveries_per_s": node_rates,
        "per_node_deliveries_per_s": _mean(node_rates),
        "node_deliveries_per_cpu_s": node_efficiency,
        "per_node_deliveries_per_cpu_s": _mean(node_efficiency),
        "window_s": window,
        "lost": expected - unique,
        "duplicated": sum(node["dups"] for node in nodes),
        "out_of_order": sum(node["out_of_order"] for node in nodes),
        "dropped_by_layer": sum(node["dropped"] for node in nodes),
        "refused_full": sent["full"],
        "latency_ms": percentiles(latencies),
        "latency_samples": len(latencies),
        "paced_behind_s": sent["behind"],
        "redis": redis_figures(result["redis"], ops),
        "sender": {
            "cpu_s": sent["cpu"],
            "cpu_sys_s": sent["cpu_sys"],
            "cpu_us_per_send": sent["cpu"] / sent["sends"] * 1e6,
            "commands_per_op": _per_op(sent["wire"]["commands"], ops),
            "round_trips_per_op": _per_op(sent["wire"]["round_trips"], ops),
        },
        "nodes": {
            "cpu_s": node_cpu,
            "cpu_sys_s": [node["cpu_sys"] for node in nodes],
            "commands_per_op": _per_op(sum(n["wire"]["commands"] for n in nodes), ops),
        },
        "stop": [node["stop"] for node in nodes],
        "probe_rounds": result["probe_rounds"],
    }


def churn_record(
    done: list[dict[str, Any]], delta: dict[str, Any], memberships: int
) -> dict[str, Any]:
    """Figures of one churn phase (every node's group_add or group_discard calls)."""
    ops = sum(node["ops"] for node in done)
    window = max(node["finished"] for node in done) - min(node["started"] for node in done)
    return {
        "ops": ops,
        "ops_per_s": ops / window,
        "window_s": window,
        "round_trips_per_op": _per_op(sum(n["wire"]["round_trips"] for n in done), ops),
        "client_commands_per_op": _per_op(sum(n["wire"]["commands"] for n in done), ops),
        "memory_per_membership": delta["memory"] / memberships if memberships else None,
        "redis": redis_figures(delta, ops),
        "nodes": {
            "cpu_s": [node["cpu"] for node in done],
            "cpu_sys_s": [node["cpu_sys"] for node in done],
        },
    }
