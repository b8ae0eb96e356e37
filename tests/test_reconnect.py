"""Outages: killed connections and a restarted redis-server lose no subscription."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis

from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.layer import BroadcastChannelLayer

from .conftest import within


@pytest.fixture
def own_redis():
    """A redis-server of this test's own, free to be killed and restarted."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
async def pair(own_redis):
    layers = [BroadcastChannelLayer(hosts=[own_redis.url]) for _ in range(2)]
    yield layers
    for layer in layers:
        await layer.close()


async def deliver_eventually(sender, group, receiver, channel, seconds=10.0):
    """Probe with group sends until one arrives: proof the member is subscribed again."""
    async with asyncio.timeout(seconds):
        n = 0
        while True:
            n += 1
            try:
                await sender.group_send(group, {"type": "probe", "n": n})
            except ConnectionError:
                await asyncio.sleep(0.05)
                continue
            try:
                async with asyncio.timeout(0.2):
                    return await receiver.receive(channel)
            except TimeoutError:
                continue


def kill_pubsub_clients(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return client.client_kill_filter(_type="pubsub")
    finally:
        client.close()


async def test_client_kill_resubscribes_every_group_with_members(pair, own_redis):
    member_node, sender = pair
    channels = {}
    for group in ("alpha", "beta", "gamma"):
        channels[group] = await member_node.new_channel()
        await member_node.group_add(group, channels[group])
    assert kill_pubsub_clients(own_redis.url) >= 1
    for group, channel in channels.items():
        assert (await deliver_eventually(sender, group, member_node, channel))["type"] == "probe"
    assert member_node.stats().reconnects >= 1
    # direct messages to process-specific channels work again too
    await sender.send(channels["alpha"], {"type": "direct"})
    while (message := await within(member_node.receive(channels["alpha"])))["type"] == "probe":
        pass
    assert message == {"type": "direct"}


async def test_a_consumer_blocked_in_receive_keeps_working_across_a_restart(pair, own_redis):
    member_node, sender = pair
    channel = await member_node.new_channel()
    await member_node.group_add("room", channel)
    blocked = asyncio.create_task(member_node.receive(channel))
    await asyncio.sleep(0)
    own_redis.restart()
    async with asyncio.timeout(10):
        n = 0
        while not blocked.done():
            n += 1
            with contextlib.suppress(ConnectionError):
                await sender.group_send("room", {"type": "after-restart", "n": n})
            await asyncio.sleep(0.05)
    assert (await blocked)["type"] == "after-restart"


async def test_a_worker_blocked_on_a_normal_channel_survives_a_restart(pair, own_redis):
    worker, sender = pair
    blocked = asyncio.create_task(worker.receive("jobs"))
    await asyncio.sleep(0.1)
    own_redis.restart()
    async with asyncio.timeout(10):
        while True:
            try:
                await sender.send("jobs", {"type": "job"})
                break
            except ConnectionError:
                await asyncio.sleep(0.05)
    assert await within(blocked, 10) == {"type": "job"}


async def test_group_add_while_redis_is_down_raises_and_leaves_no_membership(own_redis):
    layer = BroadcastChannelLayer(hosts=[own_redis.url], subscribe_timeout=0.5)
    try:
        channel = await layer.new_channel()
        own_redis.stop()
        with pytest.raises(ConnectionError):
            await layer.group_add("down", channel)
        assert layer.stats().groups == frozenset()
    finally:
        own_redis.start()
        await layer.close()


async def test_sends_while_redis_is_down_raise_redis_unavailable(own_redis):
    from broadcast_layer import RedisUnavailable

    layer = BroadcastChannelLayer(hosts=[own_redis.url])
    try:
        own_redis.stop()
        with pytest.raises(RedisUnavailable):
            await layer.group_send("g", {"type": "m"})
        with pytest.raises(RedisUnavailable):
            await layer.send("q", {"type": "m"})
    finally:
        own_redis.start()
        await layer.close()


async def test_close_leaves_no_task_behind(own_redis):
    layer = BroadcastChannelLayer(hosts=[own_redis.url])
    before = asyncio.all_tasks()
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.send(channel, {"type": "m"})
    await layer.receive(channel)
    await layer.close()
    await layer.close()  # idempotent
    assert asyncio.all_tasks() == before
