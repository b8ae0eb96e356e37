"""What one round trip to Redis costs a node's CPU: ``python -m benchmarks.roundtrip_cost``.

One process and one private redis-server. Sequential round trips, each waiting for its
reply (as a registry pipeline does while its callers wait), measured with
``time.process_time()``: a bare ``PING`` on an asyncio stream, the same through
redis-py, and the registry writer's pipeline (``Host.run_all``) carrying 1 and then 13
leaves (the churn scenario's pipelines carry 13 on average). The first is what the
kernel and the event loop charge for sending, sleeping and waking up again; the rest is
the client's. Prints the median of 5 rounds of 3,000 round trips each, in microseconds
of this process's CPU and of wall time (docs/performance.md, "Leaving, round four").
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from redis import asyncio as aioredis

from broadcast_layer import BroadcastChannelLayer
from broadcast_layer.contrib.embedded import EmbeddedRedis

ROUND_TRIPS, ROUNDS, LEAVES = 3000, 5, 13


async def _cost(trip: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    await trip()  # warm: connection, script
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(ROUND_TRIPS):
        await trip()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / ROUND_TRIPS * 1e6, wall / ROUND_TRIPS * 1e6


async def _round(url: str, port: int) -> dict[str, tuple[float, float]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def raw_ping() -> object:
        writer.write(b"PING\r\n")
        return await reader.readline()

    client = aioredis.Redis.from_url(url)
    layer = BroadcastChannelLayer(hosts=[url], prefix="rtc")
    channel = await layer.new_channel()
    core = layer.nodes.current().core
    leaves = [core.calls.leave(f"g{i}", channel, core.id)[0] for i in range(LEAVES)]
    host = core.registry_host
    try:
        return {
            "PING, asyncio stream": await _cost(raw_ping),
            "PING, redis-py": await _cost(client.ping),
            "registry pipeline, 1 leave": await _cost(lambda: host.run_all(leaves[:1])),
            f"registry pipeline, {LEAVES} leaves": await _cost(lambda: host.run_all(leaves)),
        }
    finally:
        writer.close()
        await client.aclose()
        await layer.close()


def main() -> None:
    with EmbeddedRedis() as server:
        rounds = [asyncio.run(_round(server.url, server.port)) for _ in range(ROUNDS)]
    print("| round trip | node CPU µs | wall µs |")
    print("|---|---|---|")
    for name in rounds[0]:
        cpu, wall = (statistics.median(r[name][i] for r in rounds) for i in range(2))
        print(f"| {name} | {cpu:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
