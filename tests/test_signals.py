"""connection_lost / connection_restored across a real CLIENT KILL TYPE pubsub."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broadcast_layer import BroadcastChannelLayer
from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.signals import connection_lost, connection_restored

from . import faults
from .conftest import eventually, within


@pytest.fixture
def own_redis():
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def events():
    """Every connection signal sent during the test, in order: (name, kwargs)."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def on_lost(sender: Any, **kwargs: Any) -> None:
        seen.append(("lost", kwargs))

    def on_restored(sender: Any, **kwargs: Any) -> None:
        seen.append(("restored", kwargs))

    connection_lost.connect(on_lost)
    connection_restored.connect(on_restored)
    yield seen
    connection_lost.disconnect(on_lost)
    connection_restored.disconnect(on_restored)


async def test_client_kill_sends_lost_then_restored_once_each_with_the_groups(own_redis, events):
    member = BroadcastChannelLayer(hosts=[own_redis.url], prefix="sig")
    sender = BroadcastChannelLayer(hosts=[own_redis.url], prefix="sig")
    try:
        channel = await member.new_channel()
        for group in ("room-a", "room-b"):
            await member.group_add(group, channel)
        ours = member.node_id
        assert events == []

        killed = await asyncio.to_thread(faults.kill_clients, own_redis.url, "pubsub")
        assert killed >= 1
        await eventually(lambda: any(name == "restored" for name, _ in events), 20)
        # Restored means resubscribed: a send issued now reaches the member.
        await sender.group_send("room-a", {"type": "after", "n": 1})
        assert (await within(member.receive(channel), 10))["n"] == 1

        mine = [(name, kw) for name, kw in events if kw["node_id"] == ours]
        assert [name for name, _ in mine] == ["lost", "restored"]
        for _, kwargs in mine:
            assert kwargs["groups"] == frozenset({"room-a", "room-b"})
            assert kwargs["prefix"] == "sig"
            assert kwargs["host"] == 0
        # The sender's node had no pub/sub connection to lose (it never subscribed).
        assert all(kw["node_id"] == ours for _, kw in events)
    finally:
        await member.close()
        await sender.close()


async def test_a_failing_receiver_does_not_stop_the_reader(own_redis, events):
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    connection_lost.connect(broken)
    layer = BroadcastChannelLayer(hosts=[own_redis.url], prefix="sig")
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await asyncio.to_thread(faults.kill_clients, own_redis.url, "pubsub")
        await eventually(lambda: [name for name, _ in events] == ["lost", "restored"], 20)
        await layer.group_send("room", {"type": "still.works"})
        assert (await within(layer.receive(channel), 10))["type"] == "still.works"
    finally:
        connection_lost.disconnect(broken)
        await layer.close()


async def test_close_sends_no_signal(own_redis, events):
    layer = BroadcastChannelLayer(hosts=[own_redis.url], prefix="sig")
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.close()
    assert events == []
