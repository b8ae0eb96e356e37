"""The layers a benchmark run compares, built by name inside a worker process.

``broadcast``, ``core`` and ``pubsub`` are the three Redis layers under test. The
ceilings are not channel layers users would deploy: ``raw`` is redis-py PUBLISH to
one SUBSCRIBE connection per node (no members, no fan-out), ``inmemory`` is
``channels.layers.InMemoryChannelLayer`` with the sender in the members' process, and
``queue`` is the least any in-process fan-out can do in asyncio (one ``dict.copy()``
and one ``Queue.put_nowait`` per member).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack

REDIS_LAYERS = ("broadcast", "core", "pubsub")
#: Layers whose members and sender share one process (no Redis).
LOCAL_LAYERS = ("inmemory", "queue")
LABELS = {
    "broadcast": "broadcast_layer",
    "core": "channels_redis core",
    "pubsub": "channels_redis pubsub",
    "raw": "raw redis-py pub/sub",
    "inmemory": "InMemoryChannelLayer",
    "queue": "asyncio.Queue floor",
}


def make_layer(kind: str, url: str, prefix: str, capacity: int) -> Any:
    """A fresh layer instance of ``kind`` on ``url`` under ``prefix``."""
    if kind == "broadcast":
        from broadcast_layer.layer import BroadcastChannelLayer

        return BroadcastChannelLayer(hosts=[url], prefix=prefix, capacity=capacity)
    if kind == "core":
        from channels_redis.core import RedisChannelLayer

        return RedisChannelLayer(hosts=[url], prefix=prefix, capacity=capacity)
    if kind == "pubsub":
        from channels_redis.pubsub import RedisPubSubChannelLayer

        return RedisPubSubChannelLayer(hosts=[url], prefix=prefix)
    if kind == "raw":
        return RawPubSub(url, prefix)
    if kind == "inmemory":
        from channels.layers import InMemoryChannelLayer

        return InMemoryChannelLayer(capacity=capacity)
    if kind == "queue":
        return QueueFanout()
    raise ValueError(f"unknown layer {kind!r}")


async def close_layer(kind: str, layer: Any) -> None:
    """Release a layer's connections and tasks on the current loop."""
    if kind == "core":
        await layer.close_pools()
    elif kind == "pubsub":
        await layer.flush()
    elif kind in ("broadcast", "raw"):
        await layer.close()


class RawPubSub:
    """redis-py PUBLISH -> SUBSCRIBE with the same msgpack payload: one reader, no members.

    Exposes just enough of the layer API for the benchmark's node and sender code;
    ``receive`` reads the subscription directly, so a node may have one member only.
    """

    def __init__(self, url: str, prefix: str) -> None:
        from redis import asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url)
        self._prefix = prefix
        self._pubsub: Any = None
        self._subscribed = asyncio.Event()

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.raw!only"

    async def group_add(self, group: str, channel: str) -> None:
        if self._pubsub is None:
            self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(f"{self._prefix}:{group}")
        self._subscribed.set()

    async def group_discard(self, group: str, channel: str) -> None:
        await self._pubsub.unsubscribe(f"{self._prefix}:{group}")

    async def receive(self, channel: str) -> dict[str, Any]:
        await self._subscribed.wait()
        while True:
            reply = await self._pubsub.get_message(timeout=None)
            if reply is not None and reply["type"] == "message":
                message: dict[str, Any] = msgpack.unpackb(reply["data"], raw=False)
                return message

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._redis.publish(f"{self._prefix}:{group}", msgpack.packb(message))

    async def close(self) -> None:
        if self._pubsub is not None:
            await self._pubsub.aclose()
        await self._redis.aclose()


class QueueFanout:
    """The floor of in-process fan-out: a dict copy and a queue put per member.

    ``group_send`` yields once per message, as a message arriving from a socket would.
    """

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._groups: dict[str, dict[str, None]] = {}
        self._next = 0

    async def new_channel(self, prefix: str = "specific") -> str:
        self._next += 1
        name = f"{prefix}.queue!{self._next}"
        self._queues[name] = asyncio.Queue()
        return name

    async def group_add(self, group: str, channel: str) -> None:
        self._groups.setdefault(group, {})[channel] = None

    async def group_discard(self, group: str, channel: str) -> None:
        self._groups.get(group, {}).pop(channel, None)

    async def receive(self, channel: str) -> dict[str, Any]:
        return await self._queues[channel].get()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self._queues[channel].put_nowait(message.copy())

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        queues = self._queues
        for channel in self._groups.get(group, ()):
            queues[channel].put_nowait(message.copy())
        await asyncio.sleep(0)
