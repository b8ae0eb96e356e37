"""Membership scenarios: churn (group_add / group_discard) and the registry's queries."""

from __future__ import annotations

import statistics
import time
from typing import Any

import redis

from broadcast_layer._protocol.keys import Keys

from .harness import RedisStats, Session
from .metrics import churn_record, redis_figures
from .scenarios import Bench


def _churn(
    session: Session, action: str, groups_of: list[list[str]], concurrency: int, timeout: float
) -> list[dict[str, Any]]:
    """Every node runs ``action`` over its own channels at once; wait for all of them."""
    for node in session.nodes:
        node.send("churn", action=action, groups_of=groups_of, concurrency=concurrency)
    return [node.expect("churn_done", timeout) for node in session.nodes]


def _warm_up(session: Session, concurrency: int) -> None:
    """Open the connection pools and load the scripts before anything is measured."""
    warm = [["warm"]] * concurrency
    _churn(session, "group_add", warm, concurrency, 60)
    _churn(session, "group_discard", warm, concurrency, 60)


def churn(bench: Bench, layer: str, rep: int) -> None:
    """Each node's channels join ``churn_groups_each`` groups, 16 at a time, then leave."""
    plan = bench.plan
    each, groups, channels = plan.churn_groups_each, plan.churn_groups, plan.churn_channels
    groups_of = [[f"c{(j * each + k) % groups}" for k in range(each)] for j in range(channels)]
    jobs = [{"members": channels, "receivers": False}] * 2
    memberships = 2 * channels * each
    base = {"scenario": "churn", "layer": layer, "n": memberships, "rep": rep}
    with bench.session(layer, jobs, capacity=100) as session:
        _warm_up(session, plan.churn_concurrency)
        for action in ("group_add", "group_discard"):
            before = bench.redis.snapshot()
            done = _churn(session, action, groups_of, plan.churn_concurrency, plan.deadline)
            delta = RedisStats.delta(before, bench.redis.snapshot())
            counted = memberships if action == "group_add" else 0
            bench.emit({**base, "mode": action, **churn_record(done, delta, counted)})


def seed_rooms(url: str, prefix: str, count: int) -> float:
    """Write ``count`` one-member rooms exactly as group_add's registry write does.

    Pipelined through the layer's own JOIN script (a real group_add per room would
    also hold ``count`` pub/sub subscriptions, which a listing does not read).
    Returns the seconds it took.
    """
    from broadcast_layer._protocol import scripts
    from broadcast_layer._protocol.records import RecordCalls

    calls = RecordCalls(Keys(prefix), node_ttl=15.0)  # node_ttl: the layer's default
    client = redis.Redis.from_url(url)
    started = time.monotonic()
    try:
        sources = (scripts.JOIN_GROUP, scripts.JOIN_RECORD, scripts.JOIN)
        registered = {source: client.register_script(source) for source in sources}
        for start in range(0, count, 2000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(count, start + 2000)):
                for call in calls.join(f"room{i:06d}", f"specific.seed!{i:06d}", "seed"):
                    registered[call.script](keys=list(call.keys), args=list(call.args),
                                            client=pipe)  # fmt: skip
            pipe.execute()
    finally:
        client.close()
    return time.monotonic() - started


def _query(bench: Bench, session: Session, kind: str, n: int, **args: Any) -> dict[str, Any]:
    before = bench.redis.snapshot()
    session.sender.send("query", kind=kind, n=n, **args)
    reply = session.sender.expect("query_done", bench.plan.deadline)
    delta = RedisStats.delta(before, bench.redis.snapshot())
    latencies = reply["latencies"]
    return {
        "queries": n,
        "result_size": statistics.median(reply["sizes"]),
        "latency_ms": {
            "p50": statistics.median(latencies),
            "mean": statistics.fmean(latencies),
            "max": max(latencies),
        },
        "round_trips_per_query": reply["wire"]["round_trips"] / n,
        "client_commands_per_query": reply["wire"]["commands"] / n,
        "redis": redis_figures(delta, n),
    }


def registry(bench: Bench, rep: int) -> None:
    """One group of ``registry_members``, ``registry_rooms`` rooms, and the queries over them."""
    plan = bench.plan
    members, total = plan.registry_members, plan.registry_rooms + 1
    base = {"scenario": "registry", "layer": "broadcast", "rep": rep}
    jobs = [{"members": members, "receivers": False}]
    with bench.session("broadcast", jobs, capacity=100) as session:
        _warm_up(session, plan.churn_concurrency)
        before = bench.redis.snapshot()
        done = _churn(
            session, "group_add", [["big"]] * members, plan.churn_concurrency, plan.deadline
        )
        delta = RedisStats.delta(before, bench.redis.snapshot())
        bench.emit(
            {**base, "n": members, "mode": "join_one_group", **churn_record(done, delta, members)}
        )
        seconds = seed_rooms(bench.url, session.prefix, plan.registry_rooms)
        keys = Keys(session.prefix)
        node_id = session.setups[0]["node_id"]
        queries = (
            ("room_size", 200, {"group": "big"}),
            ("members", 10, {"group": "big"}),
            # the baselines: the same data, or as much, read with one plain command
            ("raw_zrange", 10, {"key": keys.members("big"), "url": bench.url}),
            ("raw_hgetall", 10, {"key": keys.node_records(node_id), "url": bench.url}),
            ("rooms", 50, {"limit": 50, "total": total}),
        )
        for kind, n, args in queries:
            record = _query(bench, session, kind, n, **args)
            size = members if kind != "rooms" else total
            bench.emit({**base, "n": size, "mode": kind, "seed_s": seconds, **record})
