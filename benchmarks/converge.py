"""``python -m benchmarks.converge``: how long the registry takes to converge after Redis lost it.

Starts a private redis-server (EmbeddedRedis) and two nodes (layers on one event loop)
holding ``--channels`` channels each, every channel in two of ``--rooms`` rooms and
with metadata. For each repetition it wipes Redis (``FLUSHALL``, then a restart
without persistence) and measures, from the fault to the first answer that matches,
how long an observer polling every 5 ms waits until ``rooms()`` (sizes and node
counts), ``nodes()`` and each node's ``node_channels()`` equal the nodes' state. It
also times one re-assert of one node (a round trip through its writer) and, for the
first interval, what each of its steps costs: building it on the event loop, and each
kind of script in Redis, run one by one, with Redis holding the records (steady) and
after ``FLUSHALL``. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import redis

from broadcast_layer._protocol import scripts
from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.layer import BroadcastChannelLayer

STEPS = {
    scripts.REASSERT_BEGIN: "BEGIN",
    scripts.REASSERT_CHANNELS: "CHANNELS",
    scripts.REASSERT_SWAP: "SWAP",
    scripts.REASSERT_GROUP: "GROUP",
    scripts.HEARTBEAT: "HEARTBEAT",
}


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.converge", description=__doc__)
    parser.add_argument("--channels", type=int, default=500, help="channels per node")
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--interval", type=float, nargs="+", default=[0.2, 1.0, 5.0],
                        help="heartbeat intervals to measure (s)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=5)
    return parser.parse_args()


async def _populate(layer: BroadcastChannelLayer, channels: int, rooms: int) -> None:
    for i in range(channels):
        channel = await layer.new_channel()
        await layer.group_add(f"room{i % rooms}", channel)
        await layer.group_add(f"room{(i * 7 + 1) % rooms}", channel)
        await layer.set_channel_metadata(channel, {"user": i, "name": f"user {i}"})


async def _state(layers: list[BroadcastChannelLayer]) -> Any:
    sizes: dict[str, list[int]] = {}
    for layer in layers:
        for group in layer.stats().groups:
            entry = sizes.setdefault(group, [0, 0])
            entry[0] += len(layer.local_members(group))
            entry[1] += 1
    return (
        sorted((name, size, nodes) for name, (size, nodes) in sizes.items()),
        sorted(layer.node_id for layer in layers),
        [layer.stats().channels for layer in layers],
    )


async def _view(observer: BroadcastChannelLayer, layers: list[BroadcastChannelLayer]) -> Any:
    registry = observer.registry
    rooms = (await registry.rooms(limit=1000)).rooms
    return (
        sorted((room.name, room.size, room.nodes) for room in rooms),
        sorted(node.id for node in await registry.nodes()),
        [len(await registry.node_channels(layer.node_id)) for layer in layers],
    )


async def _time_to_converge(observer: BroadcastChannelLayer, layers: list[Any], want: Any) -> float:
    start = time.monotonic()
    async with asyncio.timeout(120):
        while True:
            try:
                if await _view(observer, layers) == want:
                    return time.monotonic() - start
            except ConnectionError:  # the observer's pooled connection died with the fault
                pass
            await asyncio.sleep(0.005)  # a measurement loop, not a hot path


def _steps(node: Any, client: redis.Redis) -> dict[str, float]:
    """Seconds spent building one re-assert, and running each kind of its scripts."""
    records = node.registry.records
    start = time.perf_counter()
    calls = records.reassert_calls(node.subscriptions, 0, 0)
    spent = {"build (event loop)": time.perf_counter() - start}
    stale = _run_steps(calls, client, spent)[-1]
    start = time.perf_counter()
    calls = records.reassert_group_calls(node.subscriptions, stale, len(node.mailboxes), 0.0)
    spent["build (event loop)"] += time.perf_counter() - start
    _run_steps(calls, client, spent)
    node.registry.records.mark_lost()  # the heartbeat writes the generation again
    return spent


def _run_steps(calls: list[Any], client: redis.Redis, spent: dict[str, float]) -> list[Any]:
    """Run each call (timed per kind of script); return their parsed results."""
    results = []
    for call in calls:
        script = client.register_script(call.script)
        client.script_load(call.script)  # time the script, not Redis compiling it
        start = time.perf_counter()
        reply = script(keys=list(call.keys), args=list(call.args))
        name = f"{STEPS[call.script]} (Redis)"
        spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
        results.append(call.parse(reply))
    return results


async def _measure(
    server: EmbeddedRedis, interval: float, args: argparse.Namespace
) -> dict[str, Any]:
    config = {
        "hosts": [server.url],
        "heartbeat_interval": interval,
        "node_ttl": interval * 3 + 5,
        "expiry": 3600,  # nobody receives on these channels: keep the sweep off them
    }
    layers = [BroadcastChannelLayer(**config) for _ in range(2)]
    observer = BroadcastChannelLayer(**config)
    try:
        for layer in layers:
            await _populate(layer, args.channels, args.rooms)
        want = await _state(layers)
        await _time_to_converge(observer, layers, want)
        node = layers[0].nodes.current()
        start = time.monotonic()
        await node.registry.reassert()
        reassert = time.monotonic() - start
        flush, restart = [], []
        client = redis.Redis.from_url(server.url)
        steps = None
        if interval == args.interval[0]:
            steps = {"steady": _steps(node, client)}
            client.flushall()
            steps["after FLUSHALL"] = _steps(node, client)
            await _time_to_converge(observer, layers, want)
        for _ in range(args.repeat):
            client.flushall()
            flush.append(await _time_to_converge(observer, layers, want))
        client.close()
        for _ in range(args.repeat):
            server.restart()
            restart.append(await _time_to_converge(observer, layers, want))
        return {
            "interval": interval,
            "reassert": reassert,
            "flush": flush,
            "restart": restart,
            "steps": steps,
        }
    finally:
        for layer in [*layers, observer]:
            await layer.close()


def _fmt(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


async def _main(args: argparse.Namespace) -> None:
    rows = []
    with EmbeddedRedis() as server:
        for interval in args.interval:
            rows.append(await _measure(server, interval, args))
    memberships = 2 * args.channels * 2
    print(f"2 nodes x {args.channels} channels, {memberships} memberships in {args.rooms} rooms, "
          f"metadata on every channel; {args.repeat} repetitions\n")  # fmt: skip
    print("| heartbeat_interval | one re-assert (one node) | converged after FLUSHALL, "
          "s (min / median / max) | after a restart, s (min / median / max) |")  # fmt: skip
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['interval']} s | {row['reassert'] * 1000:.0f} ms | {_fmt(row['flush'])} "
              f"| {_fmt(row['restart'])} |")  # fmt: skip
    steps = rows[0]["steps"]
    print(f"\nOne re-assert of one node ({args.channels} channels), step by step, ms\n")
    print("| step | " + " | ".join(steps) + " |")
    print("|---|" + "---|" * len(steps))
    for name in steps["steady"]:
        print(f"| {name} | " + " | ".join(f"{s.get(name, 0) * 1000:.0f}" for s in steps.values())
              + " |")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(_main(_parse()))
