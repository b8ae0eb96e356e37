"""``python -m benchmarks.guard_cost``: what the dropped-connection guard adds per command.

Times, on a live pooled connection to a private redis-server, the check a guarded
connection makes before writing each command (has the server closed it?), and the
``retry.call`` wrapper around a call that succeeds. Prints microseconds per call, the
median of 5 rounds (see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from broadcast_layer._redis import retry
from broadcast_layer._redis.clients import close_client, make_client
from broadcast_layer.contrib.embedded import EmbeddedRedis

N = 20_000


def _per_call(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    for _ in range(N):
        fn()
    return (time.perf_counter() - start) / N


async def _per_await(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    for _ in range(N):
        await fn()
    return (time.perf_counter() - start) / N


async def main(url: str) -> None:
    client = make_client({"address": url})
    await client.ping()
    conn = client.connection_pool._available_connections[0]

    async def succeed() -> int:
        return 1

    async def wrapped() -> int:
        return await retry.call(succeed, idempotent=False, what="bench")

    checks, wrappers = [], []
    for _ in range(5):
        checks.append(_per_call(conn._closed_by_peer))
        wrappers.append(await _per_await(wrapped) - await _per_await(succeed))
    await close_client(client)
    print(f"guard check before each command: {statistics.median(checks) * 1e6:.2f} us")
    print(f"retry.call around a successful call: {statistics.median(wrappers) * 1e6:.2f} us")


if __name__ == "__main__":
    with EmbeddedRedis() as server:
        asyncio.run(main(server.url))
