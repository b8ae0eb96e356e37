"""CPU per ``group_add`` and ``group_discard``, node and Redis: ``python -m benchmarks.churn_cost``.

One process and one private redis-server, nothing else: 500 channels join 10 of 100
groups each, 16 callers at a time, then leave them, as one node of the churn scenario
does. For broadcast_layer and channels_redis core in turn (5 rounds each, alternated),
prints the median CPU per operation of this process (``time.process_time()``) and of
Redis (``INFO cpu``), and the wall time per operation. Without a second node and a
second layer on the same two cores, these are what each operation costs, which the
churn scenario's rates are bounded by (docs/performance.md, "Leaving, round three").
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from broadcast_layer.contrib.embedded import EmbeddedRedis

from .harness import redis_cpu_seconds

CHANNELS, GROUPS, EACH, CALLERS = 500, 100, 10, 16
OPS = CHANNELS * EACH


def _make(layer: str, url: str, prefix: str) -> Any:
    if layer == "core":
        from channels_redis.core import RedisChannelLayer

        return RedisChannelLayer(hosts=[url], prefix=prefix)
    from broadcast_layer import BroadcastChannelLayer

    return BroadcastChannelLayer(hosts=[url], prefix=prefix)


async def _round(layer_name: str, url: str, prefix: str) -> dict[str, tuple[float, ...]]:
    layer = _make(layer_name, url, prefix)
    info = redis.Redis.from_url(url)
    channels = [await layer.new_channel() for _ in range(CHANNELS)]
    groups_of = [[f"g{(j * EACH + k) % GROUPS}" for k in range(EACH)] for j in range(CHANNELS)]

    async def phase(method: Callable[[str, str], Awaitable[None]]) -> tuple[float, ...]:
        async def caller(start: int) -> None:
            for idx in range(start, CHANNELS, CALLERS):
                for group in groups_of[idx]:
                    await method(group, channels[idx])

        redis0, cpu0, wall0 = redis_cpu_seconds(info), time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(CALLERS)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        return tuple(x / OPS * 1e6 for x in (cpu, redis_cpu_seconds(info) - redis0, wall))

    await phase(layer.group_add)  # warm: connections, scripts
    await phase(layer.group_discard)
    result = {"group_add": await phase(layer.group_add)}
    result["group_discard"] = await phase(layer.group_discard)
    if hasattr(layer, "close"):
        await layer.close()
    info.flushall()
    info.close()
    return result


def main() -> None:
    rows: dict[str, list[dict[str, tuple[float, ...]]]] = {"broadcast": [], "core": []}
    with EmbeddedRedis() as server:
        for n in range(5):
            for layer in rows:
                rows[layer].append(asyncio.run(_round(layer, server.url, f"cc{n}")))
    print(
        "| layer | operation | node CPU µs/op | Redis CPU µs/op | both | wall µs/op, 16 callers |"
    )
    print("|---|---|---|---|---|---|")
    for layer, runs in rows.items():
        for op in ("group_add", "group_discard"):
            node, red, wall = (statistics.median(run[op][i] for run in runs) for i in range(3))
            print(f"| {layer} | {op} | {node:.1f} | {red:.1f} | {node + red:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
