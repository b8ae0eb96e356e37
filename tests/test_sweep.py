"""Abandoned channels: no receive in progress for over ``expiry`` frees the channel.

The upkeep's sweep removes such a channel from its groups (unsubscribing a group left
without local members), frees its mailbox and its credit key, and deletes its registry
records; a channel with a receive in progress is never swept, however long it waits.
"""

from __future__ import annotations

import asyncio

import redis

from broadcast_layer.layer import BroadcastChannelLayer

from .conftest import LayerFactory, eventually, within

BOUND = 15.0  # generous: expiry + one tick is well under a second here


def subscribers(redis_client: redis.Redis, prefix: str, group: str) -> int:
    name = f"{prefix}:group:{group}"
    return int(redis_client.pubsub_numsub(name)[0][1])


async def listed(layer: BroadcastChannelLayer, group: str) -> set[str]:
    return {member.channel for member in await layer.registry.members(group)}


async def recorded(layer: BroadcastChannelLayer) -> set[str]:
    return {info.channel for info in await layer.registry.node_channels(layer.node_id)}


async def test_a_channel_received_to_completion_then_dropped_is_freed(
    make_layer: LayerFactory, redis_client: redis.Redis, prefix: str
) -> None:
    # The request/reply pattern: a channel made with new_channel, answered, then dropped.
    owner, replier = make_layer(expiry=0.5), make_layer()
    channel = await owner.new_channel("reply")
    await owner.group_add("dropped", channel)
    await replier.send(channel, {"type": "answer"})
    await replier.send(channel, {"type": "never read"})
    assert await within(owner.receive(channel)) == {"type": "answer"}
    assert owner.stats().channels == 1
    assert subscribers(redis_client, prefix, "dropped") == 1
    assert await listed(owner, "dropped") == {channel}
    assert channel in await recorded(owner)

    await eventually(lambda: owner.stats().channels == 0, BOUND)
    assert owner.stats().groups == frozenset()

    async def closed_in_the_registry() -> bool:  # CLOSE goes through the writer
        return not await listed(owner, "dropped")

    await eventually(closed_in_the_registry)
    assert await owner.registry.room_size("dropped") == 0
    assert channel not in await recorded(owner)
    assert await owner.registry.channel(channel) is None
    await eventually(lambda: subscribers(redis_client, prefix, "dropped") == 0)


async def test_a_receive_in_progress_keeps_its_channel_however_long_it_waits(
    make_layer: LayerFactory, redis_client: redis.Redis, prefix: str
) -> None:
    layer, sender = make_layer(expiry=0.3), make_layer()
    waiting = await layer.new_channel()
    await layer.group_add("patient", waiting)
    receiving = asyncio.create_task(layer.receive(waiting))
    await asyncio.sleep(0)  # let the receive start
    # A witness made after the receive started, never received on: once the sweep has
    # freed it, a tick has passed with the receive pending for longer than `expiry`.
    witness = await layer.new_channel()
    await layer.group_add("patient", witness)
    assert await listed(layer, "patient") == {waiting, witness}

    await eventually(lambda: layer.stats().channels == 1, BOUND)

    async def witness_left() -> bool:  # CLOSE goes through the writer
        return await listed(layer, "patient") == {waiting}

    await eventually(witness_left)
    assert witness not in await recorded(layer)
    assert layer.stats().groups == frozenset({"patient"})
    assert subscribers(redis_client, prefix, "patient") == 1  # still one member here
    assert not receiving.done()

    await sender.group_send("patient", {"type": "at last"})
    assert await within(receiving) == {"type": "at last"}


async def test_a_cancelled_receive_frees_its_channel_after_expiry(
    make_layer: LayerFactory, redis_client: redis.Redis, prefix: str
) -> None:
    # What Channels does when a consumer ends normally: it cancels the pending receive.
    layer = make_layer(expiry=0.3)
    channel = await layer.new_channel()
    await layer.group_add("cancelled", channel)
    receiving = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0)
    receiving.cancel()
    await asyncio.gather(receiving, return_exceptions=True)
    await eventually(lambda: layer.stats().channels == 0, BOUND)

    async def left() -> bool:
        return not await listed(layer, "cancelled")

    await eventually(left)
    await eventually(lambda: subscribers(redis_client, prefix, "cancelled") == 0)


async def test_a_receive_that_never_waits_keeps_the_channel(make_layer: LayerFactory) -> None:
    # A busy consumer finds a message queued at every receive, so no receive waits.
    layer = make_layer(expiry=1)
    channel = await layer.new_channel()
    await layer.group_add("never-idle", channel)
    for n in range(8):  # 8 x 0.2 s of handling, longer than expiry in total
        await layer.send(channel, {"type": "m", "n": n})  # local: queued before it returns
        assert await within(layer.receive(channel)) == {"type": "m", "n": n}
        await asyncio.sleep(0.2)
    assert layer.stats().channels == 1
    assert await listed(layer, "never-idle") == {channel}


async def test_a_receive_started_again_in_time_keeps_the_channel(
    make_layer: LayerFactory,
) -> None:
    # A consumer between two receives (its handler running) is not idle for long.
    layer, sender = make_layer(expiry=1), make_layer()
    channel = await layer.new_channel()
    await layer.group_add("busy", channel)
    for n in range(8):  # 8 x 0.2 s of handling, longer than expiry in total
        await sender.group_send("busy", {"type": "m", "n": n})
        assert await within(layer.receive(channel)) == {"type": "m", "n": n}
        await asyncio.sleep(0.2)  # the handler's work; the behaviour under test is time
    assert layer.stats().channels == 1
    assert await listed(layer, "busy") == {channel}
