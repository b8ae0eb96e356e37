"""What one round trip to Redis costs a node's CPU: ``python -m benchmarks.roundtrip_cost``.

One process and one private redis-server. Sequential round trips, each waiting for its
reply (as a registry pipeline does while its callers wait), measured with
``time.process_time()``: a bare ``PING`` on an asyncio stream, the same through
redis-py, and the registry writer's pipeline (``Host.run_all``) carrying 1 and then 13
leaves (the churn scenario's pipelines carry 13 on average); then the same 13 leaves
sent and read on a bare ``asyncio.Protocol`` with hiredis's reader, which is what a
client written at the protocol level would cost at best. The first is what the kernel
and the event loop charge for sending, sleeping and waking up again; the rest is the
client's. Prints the median of 5 rounds of 3,000 round trips each, in microseconds
of this process's CPU and of wall time (docs/performance.md, "Leaving, round four").
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
from redis import asyncio as aioredis

from broadcast_layer import BroadcastChannelLayer
from broadcast_layer._protocol import batch
from broadcast_layer.contrib.embedded import EmbeddedRedis

ROUND_TRIPS, ROUNDS, LEAVES = 3000, 5, 13


class _Bare(asyncio.Protocol):
    """One request at a time on a raw transport, replies parsed by hiredis."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.transport: Any = None
        self.waiter: asyncio.Future[Any] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        reply = self.reader.gets()
        if reply is not False and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(reply)

    async def call(self, packed: bytes) -> Any:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(packed)
        return await self.waiter


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
    bare: _Bare
    _, bare = await asyncio.get_running_loop().create_connection(_Bare, "127.0.0.1", port)

    async def bare_pipeline() -> object:
        sent = batch.merge(leaves, None)  # as Host.run_all merges them, then split alike
        commands = [host.evalsha_command(call) for call, _ in sent]
        replies = [await bare.call(b"".join(map(hiredis.pack_command, commands)))]
        return batch.split(sent, replies, len(leaves))

    try:
        return {
            "PING, asyncio stream": await _cost(raw_ping),
            "PING, redis-py": await _cost(client.ping),
            "registry pipeline, 1 leave": await _cost(lambda: host.run_all(leaves[:1])),
            f"registry pipeline, {LEAVES} leaves": await _cost(lambda: host.run_all(leaves)),
            f"the same {LEAVES} leaves, bare asyncio.Protocol + hiredis": await _cost(
                bare_pipeline
            ),
        }
    finally:
        bare.transport.close()
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
