"""Capacity of a process-specific channel for sends from other nodes: the credit its
owning node keeps in Redis (broadcast_layer/_node/credit.py, docs/architecture.md).

A send is refused with ChannelFull once the channel holds its capacity, counting the
sends on their way. The node counts from ``capacity - slack`` letters on, so a sender no
faster than the node sees ChannelFull at capacity exactly; sends accepted before the
node's count reached Redis overshoot it and are kept, up to ``limit(capacity)`` letters.
The credit key exists only while the channel is near capacity and never outlives its
node. Real redis-server processes throughout; the tests marked ``on_both`` run on the
session's local Redis Cluster too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis
from channels.exceptions import ChannelFull

from broadcast_layer import BroadcastChannelLayer
from broadcast_layer._node.credit import MIN_SLACK, limit, slack

from . import faults
from .conftest import eventually, nothing_arrives, on_both, within

Layers = Callable[..., BroadcastChannelLayer]
#: Above MIN_SLACK: such a channel starts uncounted (a send is one check and a publish).
CAPACITY = 40


def key_of(layer: BroadcastChannelLayer, channel: str) -> str:
    return layer.nodes.current().core.keys.credit(channel)


def queued(layer: BroadcastChannelLayer, channel: str) -> int:
    return len(layer.nodes.current().mailboxes[channel])


async def send_until_full(sender: BroadcastChannelLayer, channel: str, most: int) -> list[int]:
    """Send numbered messages one at a time until ChannelFull; the numbers accepted."""
    accepted = []
    for n in range(most):
        try:
            await sender.send(channel, {"type": "m", "n": n})
        except ChannelFull:
            return accepted
        accepted.append(n)
    raise AssertionError(f"no ChannelFull after {most} sends")


async def receive_numbers(layer: BroadcastChannelLayer, channel: str, count: int) -> list[int]:
    return [(await within(layer.receive(channel)))["n"] for _ in range(count)]


@on_both
async def test_a_stalled_remote_channel_refuses_past_capacity_and_takes_sends_once_drained(
    make_layer: Layers, redis_client: Any
) -> None:
    owner, sender = make_layer(capacity=CAPACITY), make_layer()
    channel = await owner.new_channel()
    accepted = await send_until_full(sender, channel, limit(CAPACITY) + 1)
    # At capacity, unless sends overtook the node's count (the documented overshoot).
    assert CAPACITY <= len(accepted) <= limit(CAPACITY)
    assert int(redis_client.get(key_of(owner, channel))) <= 0
    with pytest.raises(ChannelFull):
        await sender.send(channel, {"type": "m", "n": -1})
    # Nothing accepted is lost, and the order holds.
    assert await receive_numbers(owner, channel, len(accepted)) == accepted
    await nothing_arrives(owner, channel)
    # Drained: the count goes, and sends are one check and a publish again.
    await eventually(lambda: not redis_client.exists(key_of(owner, channel)))
    await sender.send(channel, {"type": "m", "n": 99})
    assert (await within(owner.receive(channel)))["n"] == 99
    assert owner.stats().dropped == 0


async def test_a_sender_no_faster_than_the_owner_is_refused_at_capacity_exactly(
    make_layer: Layers,
) -> None:
    owner, sender = make_layer(capacity=CAPACITY), make_layer()
    channel = await owner.new_channel()
    accepted = []
    for n in range(CAPACITY + 5):
        try:
            await sender.send(channel, {"type": "m", "n": n})
        except ChannelFull:
            break
        accepted.append(n)
        await eventually(lambda: queued(owner, channel) == len(accepted))
    assert accepted == list(range(CAPACITY))
    # Receiving one gives one credit back: exactly one more send fits.
    assert (await within(owner.receive(channel)))["n"] == 0

    async def one_more_fits() -> bool:
        try:
            await sender.send(channel, {"type": "m", "n": CAPACITY})
        except ChannelFull:
            return False
        return True

    await eventually(one_more_fits)
    with pytest.raises(ChannelFull):
        await sender.send(channel, {"type": "m", "n": -1})
    assert await receive_numbers(owner, channel, CAPACITY) == list(range(1, CAPACITY + 1))


@on_both
async def test_a_small_channel_is_counted_from_the_start_even_against_a_burst(
    make_layer: Layers, redis_client: Any
) -> None:
    capacity = 5
    assert capacity <= slack(capacity)  # counted before its name is handed out
    owner, sender = make_layer(capacity=capacity), make_layer()
    channel = await owner.new_channel()
    assert int(redis_client.get(key_of(owner, channel))) == capacity
    # A cluster client's first calls, made concurrently, can fail while it discovers the
    # cluster (on main before this change too): let it discover it first.
    await sender.ping()
    sends = [sender.send(channel, {"type": "m", "n": n}) for n in range(10 * capacity)]
    results = await asyncio.gather(*sends, return_exceptions=True)
    accepted = [n for n, result in enumerate(results) if result is None]
    assert [r for r in results if r is not None and not isinstance(r, ChannelFull)] == []
    assert len(accepted) == capacity
    assert sorted(await receive_numbers(owner, channel, capacity)) == accepted
    await nothing_arrives(owner, channel)


async def test_a_burst_overtaking_the_count_is_kept_whole(make_layer: Layers) -> None:
    """Concurrent sends all reach Redis before the owner reads the first: every accepted
    one is delivered, however far past capacity (within the mailbox's limit)."""
    capacity = 100
    burst = 2 * capacity
    assert burst <= limit(capacity)
    owner, sender = make_layer(capacity=capacity), make_layer()
    channel = await owner.new_channel()
    sends = [sender.send(channel, {"type": "m", "n": n}) for n in range(burst)]
    results = await asyncio.gather(*sends, return_exceptions=True)
    accepted = [n for n, result in enumerate(results) if result is None]
    assert all(isinstance(r, ChannelFull) for r in results if r is not None)
    assert capacity <= len(accepted) <= burst
    received = await receive_numbers(owner, channel, len(accepted))
    counted = faults.tally(accepted, received)  # concurrent sends have no order to keep
    assert (counted.lost, counted.duplicated) == (0, 0), counted
    await nothing_arrives(owner, channel)
    assert owner.stats().dropped == 0


async def test_group_messages_take_room_from_the_credit(make_layer: Layers) -> None:
    """The count is of the whole mailbox: group messages queued while the channel is
    counted leave less room for sends."""
    owner, sender = make_layer(capacity=CAPACITY), make_layer()
    channel = await owner.new_channel()
    await owner.group_add("g", channel)
    accepted = await send_until_full(sender, channel, limit(CAPACITY) + 1)
    assert len(accepted) >= CAPACITY
    for n in range(10):  # room for ten: receive ten, then fill it with group messages
        assert (await within(owner.receive(channel)))["n"] == n
    await eventually(lambda: queued(owner, channel) == len(accepted) - 10)
    await sender.group_send("g", {"type": "group"})
    await eventually(lambda: queued(owner, channel) == len(accepted) - 9)
    taken = await send_until_full(sender, channel, limit(CAPACITY) + 1)
    assert len(taken) <= max(0, CAPACITY - (len(accepted) - 9)) + slack(CAPACITY)


async def test_the_key_goes_with_an_abandoned_channel_and_with_a_closed_node(
    make_layer: Layers, redis_client: redis.Redis
) -> None:
    idle, closing = make_layer(capacity=CAPACITY, expiry=0.5), make_layer(capacity=CAPACITY)
    sender = make_layer()
    abandoned, closed = await idle.new_channel(), await closing.new_channel()
    for owner, channel in ((idle, abandoned), (closing, closed)):
        await send_until_full(sender, channel, limit(CAPACITY) + 1)
        assert redis_client.exists(key_of(owner, channel))
    # Nobody receives on `abandoned` for longer than expiry: the sweep deletes its key.
    await eventually(lambda: not redis_client.exists(key_of(idle, abandoned)))
    await closing.close()  # a clean close deletes its node's keys at once
    assert not redis_client.exists(key_of(closing, closed))


@pytest.mark.slow
async def test_a_dead_nodes_keys_expire_with_its_heartbeat_ttl(
    make_layer: Layers, node_processes: Any, redis_client: redis.Redis
) -> None:
    node = node_processes(ttl=1, heartbeat=0.2)
    channel = node.ask(op="new_channel")["channel"]
    sender = make_layer()
    await send_until_full(sender, channel, limit(100) + 1)  # the node's default capacity
    key = key_of(sender, channel)
    assert redis_client.pttl(key) > 0
    faults.sigkill(node.process)  # no clean-up: the key is left behind
    with pytest.raises(ChannelFull):  # refused until the TTL (node_ttl) runs out
        await sender.send(channel, {"type": "m"})
    await eventually(lambda: not redis_client.exists(key), 10)
    await sender.send(channel, {"type": "m"})  # reaches nobody: dropped, not refused


async def test_a_key_lost_with_redis_data_is_written_again(
    make_layer: Layers, redis_url: str, redis_client: redis.Redis
) -> None:
    owner, sender = make_layer(capacity=CAPACITY), make_layer()
    channel = await owner.new_channel()
    before = await send_until_full(sender, channel, limit(CAPACITY) + 1)
    faults.flushall(redis_url)
    # The first send through finds the mailbox full: the node writes its count again.
    after = await send_until_full(sender, channel, limit(CAPACITY) + 1)
    assert len(before) + len(after) <= limit(CAPACITY)
    assert redis_client.exists(key_of(owner, channel))
    received = await receive_numbers(owner, channel, len(before) + len(after))
    assert received == before + after
    assert owner.stats().dropped == 0


async def test_after_a_pub_sub_reconnect_every_key_is_written_again(
    make_layer: Layers, redis_url: str, redis_client: redis.Redis
) -> None:
    """A marker, or sends, may be lost while the node's subscription is down: on its
    return the node writes each count outright."""
    owner, sender = make_layer(capacity=CAPACITY), make_layer()
    channel = await owner.new_channel()
    await send_until_full(sender, channel, limit(CAPACITY) + 1)
    key = key_of(owner, channel)
    redis_client.set(key, 1000, keepttl=True)  # a count gone wrong
    reconnects = owner.stats().reconnects
    faults.kill_clients(redis_url, "pubsub")
    await eventually(lambda: owner.stats().reconnects > reconnects)
    await eventually(lambda: int(redis_client.get(key) or 0) <= 0)
    with pytest.raises(ChannelFull):
        await sender.send(channel, {"type": "m"})


def test_the_slack_and_the_limit() -> None:
    assert [slack(c) for c in (1, 16, 32, 100, 1000)] == [MIN_SLACK] * 3 + [50, 500]
    assert limit(100) == 250  # two capacities and the slack
