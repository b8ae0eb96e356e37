"""What Redis Cluster and redis-py do to a sharded subscription when its slot moves.

Probed on the local cluster (``tests/cluster.py``), Redis 7.0 and redis-py 8.1:

- After a reshard of the slot (``CLUSTER SETSLOT ... NODE``), the old owner pushes
  ``sunsubscribe`` for each of the slot's channels to its sharded subscribers and
  forgets them; an ``SPUBLISH`` at the new owner reaches nobody.
- After a ``CLUSTER FAILOVER``, the demoted master does the same: a ``sunsubscribe``
  push, then nothing, while the connection stays open.
- redis-py's async ``ClusterPubSub`` hands that push to the reader as an ordinary
  ``sunsubscribe`` message and does not subscribe at the new owner. It resubscribes only
  when its own cluster client refreshes its slot cache (a command of that client that
  met ``MOVED``), and then ``get_sharded_message()`` raises ``MovedError`` once. A
  process whose subscribing client sends nothing else stays unsubscribed for good.

So the layer reconciles its sharded subscriptions itself (``broadcast_layer/_redis/
sharded.py``). The redis-py assertion below fails on the day redis-py learns to follow
the push: then look again at what the layer still needs to own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from .cluster import Node, RedisCluster, slot_of
from .conftest import eventually, within


@contextlib.asynccontextmanager
async def raw_ssubscribe(node: Node, channel: str) -> AsyncIterator[Any]:
    """A plain RESP3 connection to ``node`` that ran ``SSUBSCRIBE channel`` (acked)."""
    client = aioredis.Redis(port=node.port, protocol=3)
    conn = await client.connection_pool.get_connection()
    try:
        await conn.send_command("SSUBSCRIBE", channel)
        assert await within(conn.read_response(push_request=True)) == [
            b"ssubscribe", channel.encode(), 1
        ]  # fmt: skip
        yield conn
    finally:
        await conn.disconnect()
        await client.connection_pool.release(conn)
        await client.aclose()


def shard_subscribers(node: Node, channel: str) -> int:
    reply = node.call("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])  # type: ignore[index]


async def test_a_reshard_pushes_sunsubscribe_and_redis_py_does_not_follow(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    channel = f"{prefix}.reshard"
    source = redis_cluster.owner_of(channel)
    target = next(m for m in redis_cluster.masters() if m is not source)
    client = ClusterClient(host="127.0.0.1", port=source.port)
    await client.initialize()
    pubsub = client.pubsub()
    try:
        await pubsub.ssubscribe(channel)
        first = await within(pubsub.get_sharded_message(timeout=5))
        assert first["type"] == "ssubscribe"
        async with raw_ssubscribe(source, channel) as raw:
            assert shard_subscribers(source, channel) == 2

            await asyncio.to_thread(redis_cluster.move_slot, slot_of(channel), target)

            # The server's side: a push on the open connection, and the subscription gone.
            assert await within(raw.read_response(push_request=True)) == [
                b"sunsubscribe", channel.encode(), 0
            ]  # fmt: skip
            assert raw.is_connected
            assert shard_subscribers(source, channel) == 0
            assert shard_subscribers(target, channel) == 0
            assert target.call("SPUBLISH", channel, "lost") == 0

        # redis-py's side: the push arrives as a message, and nothing follows it.
        pushed = await within(pubsub.get_sharded_message(timeout=5))
        assert pushed == {"type": "sunsubscribe", "pattern": None, "channel": channel.encode(),
                          "data": 0}  # fmt: skip
        assert await pubsub.get_sharded_message(timeout=0.5) is None
        assert shard_subscribers(target, channel) == 0, "redis-py resubscribed by itself"
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_a_failover_pushes_sunsubscribe_from_the_demoted_master(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    channel = f"{prefix}.failover"
    master = redis_cluster.owner_of(channel)
    async with raw_ssubscribe(master, channel) as raw:
        promoted = await asyncio.to_thread(redis_cluster.failover, master)

        assert await within(raw.read_response(push_request=True)) == [
            b"sunsubscribe", channel.encode(), 0
        ]  # fmt: skip
        assert raw.is_connected  # the demoted master keeps the connection open
        assert redis_cluster.owner_of(channel) is promoted
        await eventually(lambda: shard_subscribers(master, channel) == 0)
        assert promoted.call("SPUBLISH", channel, "lost") == 0
