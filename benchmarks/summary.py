"""The tables and the target check printed after a run and written to results/summary.*."""

from __future__ import annotations

from typing import Any

from .layers import LABELS
from .report import Results, Target, _check, _fmt, _x, table
from .scenarios import Plan

B, C, P = "broadcast", "core", "pubsub"


def _trio(res: Results, path: str, fmt: str = "{}", total: bool = False, **match: Any) -> str:
    get = res.total if total else res.median
    parts = [get(path, layer=layer, **match) for layer in (B, C, P)]
    return " / ".join("-" if v is None else fmt.format(_fmt(v)) for v in parts)


def fanout_tables(res: Results, ns: list[int]) -> str:
    fast = {"scenario": "fanout", "mode": "fast"}
    rows, ceil_rows = [], []
    for n in ns:
        rows.append(
            [
                n,
                res.median("deliveries_per_s", layer=B, n=n, **fast),
                res.median("deliveries_per_s", layer=C, n=n, **fast),
                res.median("deliveries_per_s", layer=P, n=n, **fast),
                _x(
                    res.ratio(
                        "deliveries_per_s",
                        {"layer": B, "n": n, **fast},
                        {"layer": C, "n": n, **fast},
                    )
                ),
                _x(
                    res.ratio(
                        "deliveries_per_s",
                        {"layer": B, "n": n, **fast},
                        {"layer": P, "n": n, **fast},
                    )
                ),
                _trio(res, "lost", total=True, n=n, **fast),
                _trio(res, "duplicated", total=True, n=n, **fast)
                + " ; "
                + _trio(res, "out_of_order", total=True, n=n, **fast),
                _trio(res, "redis.commands_per_op", n=n, **fast),
                _trio(res, "sender.round_trips_per_op", n=n, **fast),
                _trio(res, "latency_ms.p99", n=n, **fast),
            ]
        )
        per_node = {"layer": B, "n": n, **fast}
        ceil_rows.append(
            [
                n,
                res.median("per_node_deliveries_per_s", **per_node),
                res.median("deliveries_per_s", layer="inmemory", n=n, **fast),
                _x(
                    res.ratio(
                        "per_node_deliveries_per_s",
                        per_node,
                        {"layer": "inmemory", "n": n, **fast},
                        "deliveries_per_s",
                    )
                ),
                res.median("deliveries_per_s", layer="queue", n=n, **fast),
                _x(
                    res.ratio(
                        "per_node_deliveries_per_s",
                        per_node,
                        {"layer": "queue", "n": n, **fast},
                        "deliveries_per_s",
                    )
                ),
                _x(
                    res.ratio(
                        "per_node_deliveries_per_cpu_s",
                        per_node,
                        {"layer": "queue", "n": n, **fast},
                        "per_node_deliveries_per_cpu_s",
                    )
                ),
                res.median("msgs_per_s", **per_node),
                _x(
                    res.ratio(
                        "msgs_per_s",
                        per_node,
                        {"layer": "raw", "scenario": "fanout", "mode": "fast"},
                    )
                ),
                _trio(res, "nodes.cpu_s.0", n=n, **fast),
                _trio(res, "sender.cpu_s", n=n, **fast),
                _trio(res, "redis.cpu_s", n=n, **fast),
            ]
        )
    first = table(
        [
            "N",
            "broadcast_layer deliveries/s",
            "core",
            "pubsub",
            "x core",
            "x pubsub",
            "lost (b / c / p, all reps)",
            "dup ; out of order (b / c / p)",
            "Redis cmds per group_send (b / c / p)",
            "sender round trips per group_send (b / c / p)",
            "p99 ms under load (b / c / p)",
        ],
        rows,
    )
    second = table(
        [
            "N",
            "broadcast_layer per node deliveries/s",
            "InMemory (1 process)",
            "x InMemory",
            "asyncio.Queue floor",
            "x floor",
            "x floor per CPU-s",
            "broadcast_layer group_sends/s",
            "x raw PUBLISH→SUBSCRIBE msgs/s",
            "node0 CPU s (b / c / p)",
            "sender CPU s (b / c / p)",
            "Redis CPU s (b / c / p)",
        ],
        ceil_rows,
    )
    return first + "\n\n" + second


def paced_table(res: Results, ns: list[int]) -> str:
    rows = []
    for n in ns:
        match = {"scenario": "fanout", "mode": "paced", "n": n}
        raw = {"scenario": "fanout", "mode": "paced", "layer": "raw", "for_n": n}
        rows.append(
            [
                n,
                res.median("rate", layer=B, **match),
                _trio(res, "latency_ms.p50", **match),
                _trio(res, "latency_ms.p99", **match),
                _trio(res, "latency_ms.max", **match),
                res.median("latency_ms.p99", **raw),
                _x(res.ratio("latency_ms.p99", {"layer": B, **match}, {"layer": P, **match})),
                _trio(res, "lost", total=True, **match),
            ]
        )
    return table(
        [
            "N",
            "group_sends/s",
            "p50 ms (b / c / p)",
            "p99 ms (b / c / p)",
            "max ms (b / c / p)",
            "raw pub/sub p99 ms",
            "p99 b ÷ pubsub",
            "lost (b / c / p)",
        ],
        rows,
    )


def simple_tables(res: Results, tasks: int) -> str:
    out = []
    conc = {"scenario": "fanout", "mode": f"concurrent{tasks}"}
    rows = [
        [
            "sends/s",
            _trio(res, "sends_per_s", **conc),
            res.median("sends_per_s", layer="raw", **conc),
            _x(res.ratio("sends_per_s", {"layer": B, "n": 100, **conc}, {"layer": C, **conc})),
            _x(res.ratio("sends_per_s", {"layer": B, "n": 100, **conc}, {"layer": P, **conc})),
            _trio(res, "lost", total=True, **conc),
            _trio(res, "sender.round_trips_per_op", **conc),
            _trio(res, "sender.cpu_us_per_send", **conc),
        ]
    ]
    out.append(
        table(
            [
                "16 senders, group of 100",
                "b / c / p",
                "raw",
                "x core",
                "x pubsub",
                "lost",
                "sender round trips per send",
                "sender CPU us per send",
            ],
            rows,
        )
    )
    rooms = {"scenario": "rooms", "mode": "fast"}
    rows = [
        [
            "500 rooms x 4",
            _trio(res, "deliveries_per_s", **rooms),
            _trio(res, "sends_per_s", **rooms),
            _x(res.ratio("deliveries_per_s", {"layer": B, **rooms}, {"layer": C, **rooms})),
            _x(res.ratio("deliveries_per_s", {"layer": B, **rooms}, {"layer": P, **rooms})),
            _trio(res, "lost", total=True, **rooms),
            _trio(res, "redis.commands_per_op", **rooms),
            _trio(res, "latency_ms.p99", **rooms),
        ]
    ]
    out.append(
        table(
            [
                "rooms",
                "deliveries/s (b / c / p)",
                "sends/s",
                "x core",
                "x pubsub",
                "lost",
                "Redis cmds per group_send",
                "p99 ms under load",
            ],
            rows,
        )
    )
    p2p = {"scenario": "p2p", "mode": "fast"}
    rows = [
        [
            "send() to another node",
            _trio(res, "msgs_per_s", **p2p),
            _trio(res, "sends_per_s", **p2p),
            _x(res.ratio("msgs_per_s", {"layer": B, **p2p}, {"layer": C, **p2p})),
            _x(res.ratio("msgs_per_s", {"layer": B, **p2p}, {"layer": P, **p2p})),
            _trio(res, "lost", total=True, **p2p),
            _trio(res, "redis.commands_per_op", **p2p),
            _trio(res, "sender.round_trips_per_op", **p2p),
            _trio(res, "capacity_check.accepted", **p2p),
        ]
    ]
    out.append(
        table(
            [
                "point-to-point",
                "msgs/s delivered (b / c / p)",
                "sends/s",
                "x core",
                "x pubsub",
                "lost",
                "Redis cmds per send",
                "sender round trips per send",
                "accepted of capacity+10 to a stalled channel (cap 100)",
            ],
            rows,
        )
    )
    return "\n\n".join(out)


def burst_table(res: Results) -> str:
    """The burst at the default capacity: what each layer lost while every member drained."""
    match = {"scenario": "burst", "mode": "fast"}
    rows = []
    for layer in (B, C, P):
        each = {"layer": layer, **match}
        shares = res.values("lost_share", **each)
        spread = f"{100 * min(shares):.1f} to {100 * max(shares):.1f}%" if shares else "-"
        rows.append(
            [
                LABELS[layer],
                res.median("n", **each),
                res.median("sends", **each),
                res.median("capacity", **each),
                res.total("lost", **each),
                spread,
                res.total("duplicated", **each),
                res.total("out_of_order", **each),
                res.total("dropped_by_layer", **each),
                res.median("deliveries_per_s", **each),
                res.median("latency_ms.p99", **each),
            ]
        )
    return table(
        [
            "layer",
            "members",
            "group_sends",
            "capacity",
            "lost (all reps)",
            "lost per run, min to max",
            "duplicated",
            "out of order",
            "dropped by the layer",
            "deliveries/s",
            "p99 ms",
        ],
        rows,
    )


def churn_table(res: Results) -> str:
    rows = []
    for mode in ("group_add", "group_discard"):
        match = {"scenario": "churn", "mode": mode}
        rows.append(
            [
                mode,
                _trio(res, "ops_per_s", **match),
                _x(res.ratio("ops_per_s", {"layer": B, **match}, {"layer": C, **match})),
                _trio(res, "round_trips_per_op", **match),
                _trio(res, "redis.commands_per_op", **match),
                _trio(res, "redis.bytes_in_per_op", **match),
                _trio(res, "memory_per_membership", **match) if mode == "group_add" else "",
            ]
        )
    return table(
        [
            "churn (registry on for b)",
            "ops/s (b / c / p)",
            "b x core",
            "round trips per op (b / c / p)",
            "Redis cmds per op (incl. Lua)",
            "bytes in per op",
            "Redis memory per membership, bytes",
        ],
        rows,
    )


def registry_table(res: Results) -> str:
    rows = []
    for mode in ("join_one_group", "room_size", "members", "raw_zrange", "raw_hgetall", "rooms"):
        match = {"scenario": "registry", "mode": mode}
        if mode == "join_one_group":
            rows.append(
                [
                    f"group_add into one group of {_fmt(res.median('n', **match))}",
                    "",
                    res.median("ops_per_s", **match),
                    "ops/s",
                    res.median("round_trips_per_op", **match),
                    res.median("redis.commands_per_op", **match),
                    f"{_fmt(res.median('memory_per_membership', **match))} B/membership",
                ]
            )
            continue
        rows.append(
            [
                mode,
                res.median("result_size", **match),
                res.median("latency_ms.p50", **match),
                res.median("latency_ms.max", **match),
                res.median("round_trips_per_query", **match),
                res.median("redis.commands_per_op", **match),
                f"{_fmt(res.median('redis.bytes_out_per_op', **match))} B out",
            ]
        )
    return table(
        [
            "registry query",
            "result size",
            "p50 ms",
            "max ms",
            "round trips",
            "Redis cmds (incl. Lua)",
            "bytes",
        ],
        rows,
    )


def targets(res: Results, ns: list[int], tasks: int, members: int, rooms: int) -> list[Target]:
    """Issue 7's targets, each checked on medians of per-repetition ratios."""
    out = []
    fast = {"scenario": "fanout", "mode": "fast"}
    for n in (n for n in ns if n >= 1000):
        b = {"layer": B, "n": n, **fast}
        vs_core = res.ratio("deliveries_per_s", b, {"layer": C, "n": n, **fast})
        vs_pubsub = res.ratio("deliveries_per_s", b, {"layer": P, "n": n, **fast})
        lost = (res.total("lost", **b) or 0) + (res.total("dropped_by_layer", **b) or 0)
        sender_cmds = res.median("sender.commands_per_op", **b)
        redis_cmds = res.median("redis.commands_per_op", **b)
        out += [
            Target(
                f"fanout N={n}: deliveries/s ≥ 10x core",
                _x(vs_core),
                _check(vs_core, lambda v: v >= 10),
            ),
            Target(
                f"fanout N={n}: deliveries/s ≥ 2x pubsub (issue 17; issue 7 asked 1.2x)",
                _x(vs_pubsub),
                _check(vs_pubsub, lambda v: v >= 2),
            ),
            Target(f"fanout N={n}: nothing lost", f"{lost} lost", lost == 0),
            Target(
                f"fanout N={n}: 1 Redis command per group_send",
                f"{_fmt(sender_cmds)} sent, {_fmt(redis_cmds)} run by Redis",
                None
                if sender_cmds is None or redis_cmds is None
                else sender_cmds == 1 and redis_cmds < 1.05,
            ),
        ]
    for n in ns:
        ratio = res.ratio(
            "per_node_deliveries_per_s",
            {"layer": B, "n": n, **fast},
            {"layer": "inmemory", "n": n, **fast},
            "deliveries_per_s",
        )
        out.append(
            Target(
                f"fanout N={n}: per node ≥ 60% of InMemory",
                _x(ratio),
                _check(ratio, lambda v: v >= 0.6),
            )
        )
    burst = {"scenario": "burst", "mode": "fast", "layer": B}
    if res.values("lost", **burst):
        lost = res.total("lost", **burst) or 0
        out.append(
            Target(
                "burst above capacity (300 to 1,000 members, capacity 100): nothing lost",
                f"{lost} lost, {res.total('dropped_by_layer', **burst)} dropped by the layer",
                lost == 0,
            )
        )
    conc = {"scenario": "fanout", "mode": f"concurrent{tasks}"}
    ratio = res.ratio("sends_per_s", {"layer": B, **conc}, {"layer": P, **conc})
    out.append(
        Target(
            f"{tasks} concurrent senders: sends/s ≥ 3x pubsub",
            _x(ratio),
            _check(ratio, lambda v: v >= 3),
        )
    )
    for n in ns:
        paced = {"scenario": "fanout", "mode": "paced", "n": n}
        ratio = res.ratio("latency_ms.p99", {"layer": B, **paced}, {"layer": P, **paced})
        out.append(
            Target(
                f"paced N={n}: p99 ≤ pubsub's",
                f"{_x(ratio)} of pubsub's",
                _check(ratio, lambda v: v <= 1),
            )
        )
    p2p = {"scenario": "p2p", "mode": "fast"}
    ratio = res.ratio("msgs_per_s", {"layer": B, **p2p}, {"layer": C, **p2p})
    enforced = res.values("capacity_check.enforced", layer=B, **p2p)
    out += [
        Target("point-to-point: msgs/s ≥ 3x core", _x(ratio), _check(ratio, lambda v: v >= 3)),
        Target(
            "point-to-point: capacity and ChannelFull enforced",
            f"{sum(enforced)}/{len(enforced)} runs",
            bool(enforced) and all(enforced),
        ),
    ]
    add = {"scenario": "churn", "mode": "group_add"}
    ratio = res.ratio("ops_per_s", {"layer": B, **add}, {"layer": C, **add})
    trips = res.median("round_trips_per_op", layer=B, **add)
    memory = res.median("memory_per_membership", layer=B, **add)
    big = res.median("memory_per_membership", scenario="registry", mode="join_one_group")
    out += [
        Target("churn: group_add ≥ 3x core's rate", _x(ratio), _check(ratio, lambda v: v >= 3)),
        Target(
            "churn: ≤ 2 Redis round trips per operation",
            _fmt(trips),
            _check(trips, lambda v: v <= 2),
        ),
        Target(
            "churn: ≤ 250 B of Redis memory per membership (groups of 100)",
            f"{_fmt(memory)} B",
            _check(memory, lambda v: v <= 250),
        ),
        Target(
            f"churn: ≤ 250 B per membership (one group of {members:,})",
            f"{_fmt(big)} B",
            _check(big, lambda v: v <= 250),
        ),
    ]
    reg = {"scenario": "registry"}
    size_cmds = res.median("client_commands_per_query", mode="room_size", **reg)
    members_ms = res.median("latency_ms.p50", mode="members", **reg)
    zrange_ms = res.median("latency_ms.p50", mode="raw_zrange", **reg)
    members_x = None if members_ms is None or not zrange_ms else members_ms / zrange_ms
    page_trips = res.median("round_trips_per_query", mode="rooms", **reg)
    out += [
        Target(
            "registry: group size in one command",
            f"{_fmt(size_cmds)} commands",
            _check(size_cmds, lambda v: v == 1),
        ),
        Target(
            f"registry: {members:,} members listed within 2x a raw ZRANGE of them",
            f"{_x(members_x)} ({_fmt(members_ms)} ms against {_fmt(zrange_ms)} ms, p50)",
            _check(members_x, lambda v: v <= 2),
        ),
        Target(
            f"registry: a page of {rooms:,} rooms in one round trip",
            f"{_fmt(page_trips)} round trips",
            _check(page_trips, lambda v: v == 1),
        ),
    ]
    return out


def render(res: Results, plan: Plan) -> tuple[str, list[Target]]:
    """The whole summary as markdown, and the targets."""
    ns, tasks = list(plan.fanout_n), plan.concurrent_tasks
    checked = targets(res, ns, tasks, plan.registry_members, plan.registry_rooms)
    parts = [
        "### Targets\n\n" + table(["target", "measured", "verdict"], [t.row() for t in checked]),
        "### Fan-out, as fast as possible\n\n" + fanout_tables(res, ns),
        "### Fan-out, paced (one-way latency)\n\n" + paced_table(res, ns),
        "### Burst at the default capacity\n\n" + burst_table(res),
        "### Concurrent senders, rooms, point-to-point\n\n" + simple_tables(res, tasks),
        "### Membership churn\n\n" + churn_table(res),
        "### Registry queries\n\n" + registry_table(res),
    ]
    if res.errors:
        parts.append(
            "### Errors\n\n"
            + "\n".join(
                f"- {e.get('scenario')} {e.get('layer')} rep {e.get('rep')}: "
                f"{e['error'].strip().splitlines()[-1]}"
                for e in res.errors
            )
        )
    return "\n\n".join(parts) + "\n", checked
