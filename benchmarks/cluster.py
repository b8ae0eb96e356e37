"""``python -m benchmarks.cluster``: the layer on a 3-master Redis Cluster against one Redis.

Starts, in the same run, one private redis-server (EmbeddedRedis) and a local cluster of
3 masters with a replica each (``tests/cluster.py``, the test suite's own), and runs the
same two scenarios through the layer on each:

- **fan-out**: ``--groups`` groups (spread over the shards), each with one member on
  each of ``--receivers`` receiving nodes; a sender node ``group_send``s ``--messages``
  messages round-robin over the groups, ``--concurrency`` at a time; every member
  receives every message of its groups.
- **point-to-point**: the sender ``send``s ``--messages`` messages round-robin to one
  process-specific channel on each receiving node.

For each server it reads ``INFO cpu`` (``used_cpu_sys`` + ``used_cpu_user``) before and
after the scenario and prints the CPU the server spent per message sent, on each master
(and on the replicas together), with the wall time. What each server spends while the
nodes are idle (measured for 3 s first: its cron, the cluster bus, replication) is
subtracted. All nodes run on one event loop in
this process, so the wall time measures the Python side, not Redis: on a small machine
expect no speed-up from the cluster; the per-master CPU shows how the load spreads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from broadcast_layer import BroadcastChannelLayer
from broadcast_layer.contrib.embedded import EmbeddedRedis

from .harness import redis_cpu_seconds


@dataclass(frozen=True)
class Server:
    """One Redis process to read CPU from."""

    label: str
    port: int

    def cpu(self) -> float:
        client = redis.Redis(port=self.port, socket_timeout=10)
        try:
            return redis_cpu_seconds(client)
        finally:
            client.close()


@dataclass(frozen=True)
class Outcome:
    setup: str
    scenario: str
    messages: int
    wall: float
    cpu_us: dict[str, float]  # server label -> µs of CPU per message sent


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__)
    parser.add_argument("--messages", type=int, default=6000, help="messages per scenario")
    parser.add_argument("--groups", type=int, default=60, help="groups in the fan-out")
    parser.add_argument("--receivers", type=int, default=3, help="receiving nodes")
    parser.add_argument("--concurrency", type=int, default=50, help="sends in flight")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each scenario")
    return parser.parse_args()


class Received:
    """Counts receives; :meth:`reach` waits until the count reaches a target."""

    def __init__(self) -> None:
        self.count = 0
        self._target = 0
        self._reached = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        if self.count >= self._target:
            self._reached.set()

    async def reach(self, target: int) -> None:
        self._target = target
        self._reached.clear()
        if self.count < target:
            async with asyncio.timeout(120):
                await self._reached.wait()


async def _drain(layer: BroadcastChannelLayer, channel: str, received: Received) -> None:
    while True:
        await layer.receive(channel)
        received.add()


async def _run(
    send: Callable[[int], Awaitable[Any]], messages: int, concurrency: int, expected: int,
    received: Received,
) -> float:  # fmt: skip
    start = time.perf_counter()
    for first in range(0, messages, concurrency):
        await asyncio.gather(*(send(n) for n in range(first, min(messages, first + concurrency))))
    await received.reach(expected)
    return time.perf_counter() - start


async def _scenarios(
    setup: str, config: dict[str, Any], servers: list[Server], args: argparse.Namespace
) -> list[Outcome]:
    receivers = [BroadcastChannelLayer(**config) for _ in range(args.receivers)]
    sender = BroadcastChannelLayer(**config)
    groups = [f"room{i:03d}" for i in range(args.groups)]
    received = Received()
    tasks: list[asyncio.Task[None]] = []
    outcomes = []
    try:
        direct = []
        for layer in receivers:
            for group in groups:
                channel = await layer.new_channel()
                await layer.group_add(group, channel)
                tasks.append(asyncio.create_task(_drain(layer, channel, received)))
            channel = await layer.new_channel()
            direct.append(channel)
            tasks.append(asyncio.create_task(_drain(layer, channel, received)))
        message = {"type": "bench.message", "text": "x" * 100}
        await sender.group_send(groups[0], message)  # connections and scripts ready
        await sender.send(direct[0], message)
        await received.reach(1 + args.receivers)
        runs: list[tuple[str, Callable[[int], Awaitable[Any]], int]] = [
            ("fan-out", lambda n: sender.group_send(groups[n % len(groups)], message),
             args.receivers),
            ("point-to-point", lambda n: sender.send(direct[n % len(direct)], message), 1),
        ]  # fmt: skip
        idle = await _idle_rates(servers)
        for (name, send, copies), _ in itertools.product(runs, range(args.repeat)):
            received.count = 0
            before = {server.label: server.cpu() for server in servers}
            wall = await _run(send, args.messages, args.concurrency, args.messages * copies,
                              received)  # fmt: skip
            after = {server.label: server.cpu() for server in servers}
            # Minus what the server spends anyway (its cron, the cluster bus, replication).
            cpu = {label: (after[label] - before[label] - idle[label] * wall)
                   / args.messages * 1e6 for label in before}  # fmt: skip
            outcomes.append(Outcome(setup, name, args.messages, wall, cpu))
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for layer in [*receivers, sender]:
            await layer.close()
    return outcomes


async def _idle_rates(servers: list[Server], seconds: float = 3.0) -> dict[str, float]:
    """CPU seconds per second each server spends with the nodes idle (heartbeats only)."""
    before = {server.label: server.cpu() for server in servers}
    await asyncio.sleep(seconds)  # measuring the idle rate
    after = {server.label: server.cpu() for server in servers}
    return {label: (after[label] - before[label]) / seconds for label in before}


@contextlib.contextmanager
def _cluster() -> Iterator[Any]:
    from tests.cluster import redis_cluster  # the test suite's local cluster

    with redis_cluster() as cluster:
        yield cluster


def _report(outcomes: list[Outcome]) -> None:
    print(
        "| setup | scenario | messages | wall (s) | Redis CPU per message sent (µs), per server |"
    )
    print("|---|---|---|---|---|")
    for o in outcomes:
        per = ", ".join(f"{label} {us:.1f}" for label, us in o.cpu_us.items())
        total = sum(us for label, us in o.cpu_us.items() if not label.startswith("replicas"))
        print(f"| {o.setup} | {o.scenario} | {o.messages} | {o.wall:.2f} | {per}; "
              f"masters' total {total:.1f} |")  # fmt: skip


async def _main(args: argparse.Namespace) -> list[Outcome]:
    outcomes = []
    with EmbeddedRedis() as server:
        config = {"hosts": [server.url], "prefix": "bench"}
        outcomes += await _scenarios("one Redis", config, [Server("redis", server.port)], args)
    with _cluster() as cluster:
        masters = sorted(cluster.masters(), key=lambda node: node.port)
        servers = [Server(f"master{i + 1}", node.port) for i, node in enumerate(masters)]

        class Replicas(Server):
            def cpu(self) -> float:
                return sum(Server("", node.port).cpu() for node in cluster.nodes
                           if node not in masters)  # fmt: skip

        servers.append(Replicas("replicas (sum)", 0))
        config = {"hosts": [cluster.url], "cluster": True, "prefix": "bench"}
        outcomes += await _scenarios("cluster, 3 masters", config, servers, args)
    return outcomes


def main() -> None:
    args = _parse()
    _report(asyncio.run(_main(args)))


if __name__ == "__main__":
    main()
