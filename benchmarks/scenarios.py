"""The scenarios of issue 7, each a function that runs sessions and emits records.

Sizes come from a :class:`Plan` (``QUICK`` for a smoke run, ``FULL`` for the numbers
in docs/performance.md). Every record is a flat dict written as one JSON line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .harness import RedisStats, Session, WorkerPool
from .metrics import delivery_record

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Plan:
    """How big and how long each scenario is."""

    name: str
    reps: int
    fanout_n: tuple[int, ...] = (10, 100, 1000, 5000)
    fast_count: dict[int, int] = field(default_factory=dict)
    paced_rate: dict[int, int] = field(
        default_factory=lambda: {10: 200, 100: 100, 1000: 20, 5000: 4}
    )
    paced_seconds: float = 3.0
    concurrent_n: int = 100
    concurrent_tasks: int = 16
    concurrent_count: int = 6000  # long enough that sends/s is not start-up noise
    rooms: int = 500
    room_size: int = 4
    rooms_count: int = 3000
    p2p_channels: int = 50
    p2p_count: int = 12000
    p2p_capacity: int = 100
    churn_channels: int = 500
    churn_groups_each: int = 10
    churn_groups: int = 100
    churn_concurrency: int = 16
    registry_members: int = 10_000
    registry_rooms: int = 100_000
    burst_n: int = 1000
    burst_count: int = 300
    burst_capacity: int = 100  # the layers' default capacity
    deadline: float = 90.0


FULL = Plan(name="full", reps=3, fast_count={10: 6000, 100: 2000, 1000: 300, 5000: 80})
QUICK = Plan(
    name="quick",
    reps=1,
    fast_count={10: 1000, 100: 300, 1000: 40, 5000: 10},
    paced_seconds=1.0,
    concurrent_count=800,
    rooms_count=1000,
    p2p_count=1000,
    churn_channels=100,
    registry_members=2000,
    registry_rooms=10_000,
    deadline=30.0,
)


@dataclass
class Bench:
    """Everything a scenario needs: workers, Redis, the plan and where records go."""

    pool: WorkerPool
    redis: RedisStats
    url: str
    plan: Plan
    emit: Emit

    def session(self, layer: str, jobs: list[dict[str, Any]], capacity: int) -> Session:
        return Session(
            self.pool, self.redis, self.url, layer, jobs, capacity=capacity, timeout=60.0
        )


def _stride(members: int, expected: int, samples: int = 100_000) -> int:
    """Record every k-th member's latencies so a node keeps about ``samples`` of them."""
    return max(1, math.ceil(members * expected / samples))


def _deliveries(
    bench: Bench,
    session: Session,
    targets: dict[str, Any],
    run: dict[str, Any],
    members: list[int],
    per_node: int,
) -> dict[str, Any]:
    count = run["count"]
    expected = count // len(members)
    result = session.phase(
        targets,
        run,
        expected=expected,
        stride=_stride(per_node, expected),
        deadline=bench.plan.deadline,
    )
    return delivery_record(result, members)


# -- fan-out: one group of N over two nodes ---------------------------------------------


def _fanout_jobs(layer: str, n: int) -> list[dict[str, Any]]:
    if layer in ("inmemory", "queue"):
        return [{"members": n, "groups_of": [["g0"]] * n}]
    per_node = 1 if layer == "raw" else n // 2
    return [{"members": per_node, "groups_of": [["g0"]] * per_node}] * 2


def _inmemory_count(n: int, count: int) -> int:
    # InMemoryChannelLayer.receive() walks every channel and membership (O(N) per
    # receive, O(N^2) per group_send), so keep its runs to ~1e7 steps.
    return max(1, min(count, int(1e7 / (n * n))))


def fanout(bench: Bench, layer: str, n: int, rep: int) -> None:
    """Fast burst, paced latency and (at concurrent_n) 16 concurrent senders."""
    plan = bench.plan
    count = plan.fast_count[n]
    if layer == "inmemory":
        count = _inmemory_count(n, count)
    jobs = _fanout_jobs(layer, n)
    per_node = jobs[0]["members"]
    members = per_node * len(jobs)
    base = {"scenario": "fanout", "layer": layer, "n": n, "rep": rep}
    targets = {"groups": ["g0"]}
    capacity = max(count, plan.concurrent_count) + 100  # receivers may lag a burst
    with bench.session(layer, jobs, capacity=capacity) as session:
        run = {"mode": "burst", "count": count}
        record = _deliveries(bench, session, targets, run, [members], per_node)
        bench.emit({**base, "mode": "fast", **record})
        if layer in ("inmemory", "queue"):
            return
        rate = plan.paced_rate[n]
        run = {"mode": "paced", "count": int(rate * plan.paced_seconds), "rate": rate}
        record = _deliveries(bench, session, targets, run, [members], per_node)
        bench.emit({**base, "mode": "paced", "rate": rate, **record})
        if n == plan.concurrent_n:
            tasks = plan.concurrent_tasks
            run = {"mode": "burst", "count": plan.concurrent_count, "tasks": tasks}
            probe = {**targets, "concurrency": tasks}  # opens the pool's connections too
            record = _deliveries(bench, session, probe, run, [members], per_node)
            bench.emit({**base, "mode": f"concurrent{tasks}", **record})


def raw_ceiling(bench: Bench, rep: int) -> None:
    """redis-py PUBLISH -> SUBSCRIBE: one subscriber per node process, same payload."""
    plan = bench.plan
    jobs = _fanout_jobs("raw", 2)
    base = {"scenario": "fanout", "layer": "raw", "n": 2, "rep": rep}
    targets = {"groups": ["g0"]}
    count = plan.fast_count[min(plan.fanout_n)]
    with bench.session("raw", jobs, capacity=0) as session:
        record = _deliveries(bench, session, targets, {"mode": "burst", "count": count}, [2], 1)
        bench.emit({**base, "mode": "fast", **record})
        for n in plan.fanout_n:
            rate = plan.paced_rate[n]
            run = {"mode": "paced", "count": int(rate * plan.paced_seconds), "rate": rate}
            record = _deliveries(bench, session, targets, run, [2], 1)
            bench.emit({**base, "mode": "paced", "rate": rate, "for_n": n, **record})
        tasks = plan.concurrent_tasks
        run = {"mode": "burst", "count": plan.concurrent_count, "tasks": tasks}
        record = _deliveries(bench, session, {**targets, "concurrency": tasks}, run, [2], 1)
        bench.emit({**base, "mode": f"concurrent{tasks}", **record})


# -- a burst at the default capacity ---------------------------------------------------


def burst(bench: Bench, layer: str, rep: int) -> None:
    """A burst larger than the default capacity: what is lost while every member drains.

    The fan-out scenario sizes capacity for its burst; this one keeps the layers'
    default (100) and sends 300 group_send calls as fast as one task can to a group of
    1 000 members split over the two nodes, whose members receive in a loop as usual.
    """
    plan = bench.plan
    n, count = plan.burst_n, plan.burst_count
    jobs = _fanout_jobs(layer, n)
    per_node = jobs[0]["members"]
    with bench.session(layer, jobs, capacity=plan.burst_capacity) as session:
        run = {"mode": "burst", "count": count}
        record = _deliveries(bench, session, {"groups": ["g0"]}, run, [n], per_node)
    expected = count * n
    bench.emit(
        {
            "scenario": "burst",
            "layer": layer,
            "n": n,
            "rep": rep,
            "mode": "fast",
            "capacity": plan.burst_capacity,
            "lost_share": record["lost"] / expected,
            **record,
        }
    )


# -- rooms and point-to-point -----------------------------------------------------------


def rooms(bench: Bench, layer: str, rep: int) -> None:
    """500 rooms of 4 members, 2 on each node; group_send round-robin over the rooms."""
    plan = bench.plan
    half = plan.room_size // 2
    per_node = plan.rooms * half
    groups_of = [[f"r{j // half}"] for j in range(per_node)]
    jobs = [{"members": per_node, "groups_of": groups_of}] * 2
    targets = {"groups": [f"r{i}" for i in range(plan.rooms)]}
    capacity = plan.rooms_count + 100  # channels_redis core counts capacity per process
    with bench.session(layer, jobs, capacity=capacity) as session:
        run = {"mode": "burst", "count": plan.rooms_count}
        record = _deliveries(bench, session, targets, run, [plan.room_size] * plan.rooms, per_node)
    bench.emit(
        {
            "scenario": "rooms",
            "layer": layer,
            "n": plan.rooms * plan.room_size,
            "rep": rep,
            "mode": "fast",
            **record,
        }
    )


def point_to_point(bench: Bench, layer: str, rep: int) -> None:
    """send() to process-specific channels on the two nodes from a third process."""
    plan = bench.plan
    jobs = [{"members": plan.p2p_channels, "stalled": 1}] * 2
    with bench.session(layer, jobs, capacity=plan.p2p_capacity) as session:
        a, b = (setup["channels"] for setup in session.setups)
        channels = [channel for pair in zip(a, b, strict=True) for channel in pair]
        targets = {"channels": channels}
        run = {"mode": "burst", "count": plan.p2p_count}
        record = _deliveries(bench, session, targets, run, [1] * len(channels), len(a))
        stalled = session.setups[0]["stalled"][0]
        count = plan.p2p_capacity + 10
        session.sender.send("capacity", channel=stalled, count=count)
        check = session.sender.expect("capacity_done", 60)
    bench.emit(
        {
            "scenario": "p2p",
            "layer": layer,
            "n": len(channels),
            "rep": rep,
            "mode": "fast",
            **record,
            "capacity_check": {
                "capacity": plan.p2p_capacity,
                "sent": count,
                **{k: check[k] for k in ("accepted", "full")},
                "enforced": check["accepted"] == plan.p2p_capacity,
            },
        }
    )
