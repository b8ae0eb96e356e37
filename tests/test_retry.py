"""Dropped connections: every call succeeds on its first try after its pooled connections
were killed while idle, and a retry never applies a write twice.

Each "after a kill" test warms the pool, kills every normal client (``CLIENT KILL TYPE
normal``, what an idle timeout in a cloud Redis does), makes the call once, and counts
what arrives. Before the connection guard, each of these raised ``RedisUnavailable:
Connection closed by server`` (redis-py 8 hands out a dead pooled connection).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from io import StringIO
from unittest.mock import ANY
from urllib.parse import urlparse

import pytest
import redis
from django.core.management import call_command

from broadcast_layer import PoolExhausted, RedisUnavailable
from broadcast_layer._redis import retry
from broadcast_layer.emitter import AsyncEmitter, Emitter
from broadcast_layer.layer import BroadcastChannelLayer

from . import faults
from .conftest import eventually, nothing_arrives, within


@pytest.fixture
def kill(redis_url):
    """Kill every normal client of the test's Redis; fail if there was nothing to kill."""

    def kill_all() -> None:
        assert faults.kill_clients(redis_url, "normal") >= 1

    return kill_all


@pytest.fixture
def layer_settings(settings, redis_url, prefix):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        },
    }


async def member(layer: BroadcastChannelLayer, group: str) -> str:
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


async def exactly_once(layer: BroadcastChannelLayer, channel: str, expected: dict) -> None:
    """``expected`` arrives on ``channel``, and nothing after it (no duplicate)."""
    assert await within(layer.receive(channel)) == expected
    await nothing_arrives(layer, channel)


# -- the backoff -------------------------------------------------------------------------


def test_backoff_is_full_jitter_within_its_bounds():
    backoff = retry.Backoff(base=0.05, cap=2.0)
    rng_state = random.getstate()
    try:
        random.seed(11)
        for attempt in range(12):
            bound = min(2.0, 0.05 * 2**attempt)
            delays = [backoff.delay(attempt) for _ in range(400)]
            assert all(0 <= delay <= bound for delay in delays)
            # full jitter: spread over the whole range, not clustered at the bound
            assert min(delays) < bound * 0.1
            assert max(delays) > bound * 0.9
        assert backoff.delay(10_000) <= 2.0  # no overflow for a long outage
    finally:
        random.setstate(rng_state)


def test_retrying_grows_until_reset():
    retrying = retry.Retrying(retry.Backoff(base=1.0, cap=100.0))
    bounds = []
    for _ in range(4):
        bounds.append(retrying.attempt)
        retrying.next_delay()
    assert bounds == [0, 1, 2, 3]
    retrying.reset()
    assert retrying.attempt == 0


# -- every operation family after a kill -------------------------------------------------


async def test_group_send_after_a_kill_is_delivered_once(nodes, kill):
    receiver, sender = nodes[0], nodes[1]
    channel = await member(receiver, "room")
    await sender.group_send("room", {"type": "m", "n": 0})
    await exactly_once(receiver, channel, {"type": "m", "n": 0})
    kill()
    assert await sender.group_send("room", {"type": "m", "n": 1}) == 1
    await exactly_once(receiver, channel, {"type": "m", "n": 1})


async def test_concurrent_group_sends_after_a_kill_arrive_once_in_order(nodes, kill):
    """The auto-pipelined path: sends made while one is in flight go out in one pipeline."""
    receiver, sender = nodes[0], nodes[1]
    channel = await member(receiver, "busy")
    # several idle pooled connections, so the pipeline also starts on a dead one
    await asyncio.gather(*(sender.registry.room_size("busy") for _ in range(4)))
    kill()
    sent = range(40)
    reached = await asyncio.gather(*(sender.group_send("busy", {"type": "m", "n": n})
                                     for n in sent))  # fmt: skip
    assert reached == [1] * len(sent)
    received = [(await within(receiver.receive(channel)))["n"] for _ in sent]
    await nothing_arrives(receiver, channel)
    tally = faults.tally(sent, received)
    assert (tally.lost, tally.duplicated, tally.reordered) == (0, 0, 0)


async def test_send_to_a_queue_and_receive_after_kills_arrive_once(nodes, kill):
    worker, sender = nodes[0], nodes[1]
    await sender.send("jobs", {"type": "job", "n": 0})
    assert await within(worker.receive("jobs")) == {"type": "job", "n": 0}
    kill()
    await sender.send("jobs", {"type": "job", "n": 1})
    kill()
    assert await within(worker.receive("jobs")) == {"type": "job", "n": 1}
    await nothing_arrives(worker, "jobs")


async def test_a_worker_blocked_in_blpop_survives_the_kill(nodes, kill, redis_url):
    worker, sender = nodes[0], nodes[1]
    blocked = asyncio.create_task(worker.receive("blocked-jobs"))
    await eventually(lambda: faults.blocked_on(redis_url, "blpop"))
    kill()  # kills the BLPOP mid-command: the loop retries it
    await sender.send("blocked-jobs", {"type": "job"})
    assert await within(blocked, 10) == {"type": "job"}
    await nothing_arrives(worker, "blocked-jobs")


async def test_send_to_another_nodes_channel_after_a_kill_is_received_once(nodes, kill):
    owner, sender = nodes[0], nodes[1]
    channel = await owner.new_channel()
    await sender.send(channel, {"type": "m", "n": 0})
    await exactly_once(owner, channel, {"type": "m", "n": 0})
    kill()
    await sender.send(channel, {"type": "m", "n": 1})
    await exactly_once(owner, channel, {"type": "m", "n": 1})


async def test_group_add_and_group_discard_after_kills(nodes, kill):
    layer, sender = nodes[0], nodes[1]
    channel = await member(layer, "first")
    kill()
    await layer.group_add("second", channel)
    await sender.group_send("second", {"type": "m", "n": 1})
    await exactly_once(layer, channel, {"type": "m", "n": 1})
    assert await sender.registry.room_size("second") == 1
    kill()
    await layer.group_discard("second", channel)
    assert await sender.registry.room_size("second") == 0
    assert await sender.group_send("second", {"type": "m", "n": 2}) == 0
    await nothing_arrives(layer, channel)


async def test_remote_group_add_and_disconnect_after_kills(nodes, kill):
    owner, caller = nodes[0], nodes[1]
    channel = await owner.new_channel()
    await caller.new_channel()  # the caller listens for confirmations
    kill()
    await caller.group_add("remote", channel)  # control message + the owner's own writes
    assert owner.local_members("remote") == {channel}
    kill()
    assert await caller.disconnect(channel) is True
    await exactly_once(owner, channel, {"type": "broadcast.disconnect"})


async def test_new_channel_and_set_channel_metadata_after_kills(layer, kill):
    first = await layer.new_channel()
    kill()
    second = await layer.new_channel()
    kill()
    assert await layer.set_channel_metadata(second, {"user": 7}) is True
    info = await layer.registry.channel(second)
    assert info is not None
    assert info.metadata == {"user": 7}
    assert first != second


async def test_registry_reads_after_kills(nodes, kill):
    layer, other = nodes[0], nodes[1]
    channel = await member(other, "lobby")
    await layer.registry.rooms()
    for query in (
        lambda: layer.registry.rooms(),
        lambda: layer.registry.room("lobby"),
        lambda: layer.registry.room_size("lobby"),
        lambda: layer.registry.members("lobby"),
        lambda: layer.registry.channel(channel),
        lambda: layer.registry.nodes(),
        lambda: layer.registry.node_channels(other.node_id),
    ):
        kill()
        assert await query()
    kill()
    assert await asyncio.to_thread(layer.sync_registry.room_size, "lobby") == 1
    kill()
    assert [m.channel for m in await asyncio.to_thread(layer.sync_registry.members, "lobby")] == [
        channel
    ]
    layer.sync_registry.close()


async def test_flush_after_a_kill(layer, kill, redis_client, prefix):
    await layer.send("leftover", {"type": "m"})
    kill()
    await layer.flush()
    assert not redis_client.keys(f"{prefix}:*")


async def test_emitters_after_kills(nodes, kill, layer_settings):
    receiver = nodes[0]
    channel = await member(receiver, "news")
    emitter = Emitter()
    try:
        await asyncio.to_thread(emitter.group, "news", {"type": "m", "n": 0})
        await exactly_once(receiver, channel, {"type": "m", "n": 0})
        kill()
        result = await asyncio.to_thread(emitter.group, "news", {"type": "m", "n": 1})
        assert (result.nodes, result.members) == (1, 1)
        await exactly_once(receiver, channel, {"type": "m", "n": 1})
        kill()
        await asyncio.to_thread(emitter.channel, channel, {"type": "m", "n": 2})
        await exactly_once(receiver, channel, {"type": "m", "n": 2})
    finally:
        emitter.close()
    async_emitter = AsyncEmitter()
    await async_emitter.group("news", {"type": "m", "n": 3})
    await exactly_once(receiver, channel, {"type": "m", "n": 3})
    kill()
    assert (await async_emitter.group("news", {"type": "m", "n": 4})).nodes == 1
    await exactly_once(receiver, channel, {"type": "m", "n": 4})
    kill()
    await async_emitter.channel(channel, {"type": "m", "n": 5})
    await exactly_once(receiver, channel, {"type": "m", "n": 5})


async def test_management_commands_after_a_kill(nodes, kill, layer_settings):
    receiver = nodes[0]
    channel = await member(receiver, "ops")

    def command(*args: str) -> str:
        out = StringIO()
        call_command(*args, stdout=out)
        return out.getvalue()

    await asyncio.to_thread(command, "rooms", "--format", "json")
    kill()
    rooms = json.loads(await asyncio.to_thread(command, "rooms", "--format", "json"))
    assert rooms["rooms"] == [{"name": "ops", "size": 1, "nodes": 1}]
    kill()
    await asyncio.to_thread(command, "broadcast", "ops", "hello")
    await exactly_once(receiver, channel, {"type": "broadcast.message", "text": "hello"})


async def test_port_of_channels_redis_auto_reconnect(layer, kill):
    """channels_redis's test_auto_reconnect, with connections closed from both ends."""
    one, two, three = [await layer.new_channel(f"test-gr-chan-{i}") for i in (1, 2, 3)]
    await layer.group_add("test-group", one)
    await layer.group_add("test-group", two)
    await layer.close_pools()  # closed by the client...
    await layer.group_add("test-group", three)
    kill()  # ...and by the server
    await layer.group_discard("test-group", two)
    await layer.close_pools()
    await layer.group_send("test-group", {"type": "message.1"})
    await exactly_once(layer, one, {"type": "message.1"})
    await exactly_once(layer, three, {"type": "message.1"})
    await nothing_arrives(layer, two)


# -- a write is retried only where it cannot be applied twice ----------------------------


async def test_an_ambiguous_publish_is_not_retried(nodes, redis_url):
    """The PUBLISH reached Redis, then the connection died: the layer must not resend it."""
    receiver, sender = nodes[0], nodes[1]
    channel = await member(receiver, "held")
    await sender.group_send("held", {"type": "warm"})
    await within(receiver.receive(channel))
    with faults.writes_paused(redis_url):
        sending = asyncio.create_task(sender.group_send("held", {"type": "m"}))
        await eventually(lambda: faults.blocked_on(redis_url, "publish"))
        faults.kill_clients(redis_url, "normal")  # Redis drops the held, unrun PUBLISH
        with pytest.raises(RedisUnavailable):
            await within(sending)
    await nothing_arrives(receiver, channel)  # a resend would have been let through


async def test_registry_writes_redis_holds_fail_after_subscribe_timeout(make_layer, redis_url):
    """The writer bounds every write, also those queued behind a pipeline Redis holds:
    each group_add raises, its join is undone, and the registry agrees once Redis runs
    the held writes (the undoing leaves come after them)."""
    layer = make_layer(subscribe_timeout=0.5)
    channels = [await layer.new_channel() for _ in range(3)]
    # The writer's script loaded first: Redis 6.2 holds a SCRIPT LOAD in a pause too.
    await layer.group_add("warm", channels[0])
    await layer.group_discard("warm", channels[0])
    with faults.writes_paused(redis_url):
        held = asyncio.create_task(layer.group_add("held", channels[0]))
        await eventually(lambda: faults.blocked_on(redis_url, "evalsha"))
        queued = [asyncio.create_task(layer.group_add("held", c)) for c in channels[1:]]
        for task in (held, *queued):
            with pytest.raises(RedisUnavailable, match="not confirmed in time"):
                await within(task)
        assert layer.local_members("held") == set()
    await layer.group_add("after", channels[0])  # the writer carries on, in order
    assert [m.channel for m in await layer.registry.members("after")] == [channels[0]]
    assert await layer.registry.room_size("held") == 0
    assert [await layer.registry.groups_of(c) for c in channels] == [{"after": ANY}, {}, {}]


async def test_an_ambiguous_queue_push_is_not_retried(layer, redis_url, redis_client, prefix):
    await layer.send("held-queue", {"type": "warm"})
    assert await within(layer.receive("held-queue")) == {"type": "warm"}
    with faults.writes_paused(redis_url):
        sending = asyncio.create_task(layer.send("held-queue", {"type": "m"}))
        await eventually(lambda: faults.blocked_on(redis_url, "evalsha"))
        faults.kill_clients(redis_url, "normal")
        with pytest.raises(RedisUnavailable):
            await within(sending)
    assert redis_client.llen(f"{prefix}:queue:{{held-queue}}") == 0


@pytest.mark.parametrize("form", ["url", "dict"])
async def test_an_ambiguous_sync_publish_is_not_retried(nodes, redis_url, prefix, settings, form):
    """redis-py's own Retry (10 tries for a dict host in redis-py 8) would resend it."""
    parsed = urlparse(redis_url)
    host = redis_url if form == "url" else {"host": parsed.hostname, "port": parsed.port}
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
        "CONFIG": {"hosts": [host], "prefix": prefix},
    }}  # fmt: skip
    receiver = nodes[0]
    channel = await member(receiver, "held")
    emitter = Emitter()
    try:
        await asyncio.to_thread(emitter.group, "held", {"type": "warm"})
        await within(receiver.receive(channel))
        with faults.writes_paused(redis_url):
            sending = asyncio.ensure_future(asyncio.to_thread(emitter.group, "held", {"type": "m"}))
            await eventually(lambda: faults.blocked_on(redis_url, "publish"))
            faults.kill_clients(redis_url, "normal")
            with pytest.raises(RedisUnavailable):
                await within(sending)
        await nothing_arrives(receiver, channel)
    finally:
        emitter.close()


async def test_an_idempotent_read_and_registry_write_are_retried(nodes, redis_url):
    layer, other = nodes[0], nodes[1]
    channel = await layer.new_channel()
    await other.registry.room_size("held")
    with faults.writes_paused(redis_url) as admin:
        joining = asyncio.create_task(layer.group_add("held", channel))
        reading = asyncio.create_task(other.registry.room_size("held"))
        # Redis 6.2 also pauses SCRIPT LOAD (7 does not), where the join may be held.
        await eventually(lambda: faults.blocked_on(redis_url, "evalsha", "script") >= 2)
        faults.kill_clients(redis_url, "normal")
        admin.client_unpause()  # the retries run now
        await within(joining)
        assert await within(reading) in (0, 1)
    assert await other.registry.room_size("held") == 1
    assert [m.channel for m in await other.registry.members("held")] == [channel]


async def test_an_ambiguous_sync_registry_read_is_retried(layer, redis_url):
    registry = layer.sync_registry
    try:
        await asyncio.to_thread(registry.room_size, "held")
        with faults.writes_paused(redis_url) as admin:
            reading = asyncio.ensure_future(asyncio.to_thread(registry.room_size, "held"))
            await eventually(lambda: faults.blocked_on(redis_url, "evalsha"))
            faults.kill_clients(redis_url, "normal")
            admin.client_unpause()
            assert await within(reading) == 0
    finally:
        registry.close()


# -- a server that is really down --------------------------------------------------------


@pytest.fixture
def own_redis():
    from broadcast_layer.contrib.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def retries(caplog):
    """The retry lines logged, one per retry."""
    caplog.set_level(logging.INFO, logger="broadcast_layer._redis.retry")

    def count() -> int:
        return sum(1 for r in caplog.records if r.name == "broadcast_layer._redis.retry")

    return count


async def test_a_down_server_is_tried_a_bounded_number_of_times(own_redis, retries):
    layer = BroadcastChannelLayer(hosts=[own_redis.url])
    try:
        await layer.group_send("g", {"type": "m"})
        await layer.registry.room_size("g")
        own_redis.stop()
        for call in (
            lambda: layer.group_send("g", {"type": "m"}),  # not sent: safe to retry
            lambda: layer.send("q", {"type": "m"}),
            lambda: layer.registry.room_size("g"),  # idempotent
        ):
            before = retries()
            with pytest.raises(RedisUnavailable) as raised:
                await within(call(), 20)
            assert retries() - before == retry.ATTEMPTS - 1
            assert not isinstance(raised.value, PoolExhausted)
        before = retries()
        with pytest.raises(RedisUnavailable):
            await asyncio.to_thread(layer.sync_registry.room_size, "g")
        assert retries() - before == retry.ATTEMPTS - 1
    finally:
        own_redis.start()
        layer.sync_registry.close()
        await layer.close()


# -- pool exhaustion ---------------------------------------------------------------------


async def test_a_pool_that_stays_full_is_pool_exhausted_and_not_retried(
    make_layer, redis_url, retries
):
    # A full pool makes callers wait (tests/test_pools.py); one that stays full for
    # pool_timeout is PoolExhausted, which is not an outage: no retry.
    host = {"address": redis_url, "max_connections": 2, "client_name": "full-pool"}
    layer = make_layer(hosts=[host], pool_timeout=0.2)
    holders = [asyncio.ensure_future(layer.receive(f"pool-empty-{n}")) for n in range(2)]
    observer = redis.Redis.from_url(redis_url)
    try:  # both connections held by a BLPOP on an empty queue
        await eventually(lambda: sum(c["name"] == "full-pool" and c["cmd"] == "blpop"
                                     for c in observer.client_list()) == 2)  # fmt: skip
        results = await asyncio.gather(*(layer.send("pool-q", {"type": "m", "n": n})
                                         for n in range(8)), return_exceptions=True)  # fmt: skip
    finally:
        observer.close()
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
    assert all(isinstance(r, PoolExhausted) for r in results), results
    assert all(isinstance(r, RedisUnavailable) for r in results)
    assert "max_connections" in str(results[0])
    assert retries() == 0
    await within(layer.send("pool-q", {"type": "m", "n": 8}))  # free again: sent at once
    assert (await within(layer.receive("pool-q")))["n"] == 8


# -- close_pools -------------------------------------------------------------------------


def clients(url: str, name: str) -> int:
    """Connections named ``name`` (command and pub/sub alike)."""
    client = redis.Redis.from_url(url)
    try:
        return sum(1 for c in client.client_list() if c["name"] == name)
    finally:
        client.close()


async def test_close_pools_closes_this_loops_connections_and_the_layer_carries_on(
    make_layer, redis_url
):
    def named(name):
        return make_layer(hosts=[{"address": redis_url, "client_name": name}])

    member_node, sender, idle = named("cp-member"), named("cp-sender"), named("cp-idle")
    channel = await member(member_node, "kept")
    await sender.group_send("kept", {"type": "m", "n": 0})
    await exactly_once(member_node, channel, {"type": "m", "n": 0})
    await idle.group_add("idle-group", "idle.queue")  # a normal channel: no node channel
    await idle.group_discard("idle-group", "idle.queue")  # nothing subscribed any more
    assert clients(redis_url, "cp-idle") >= 2  # a command and a pub/sub connection
    for layer in (member_node, sender, idle):
        await layer.close_pools()
        await layer.close_pools()  # idempotent
    # Redis notices a closed socket on its own schedule: wait for it, bounded
    await eventually(lambda: clients(redis_url, "cp-sender") == 0)
    await eventually(lambda: clients(redis_url, "cp-idle") == 0)  # its pub/sub served nothing
    await eventually(lambda: clients(redis_url, "cp-member") == 1)  # the pub/sub one is kept
    # still usable: connections reopen on next use, members never left
    await sender.group_send("kept", {"type": "m", "n": 1})
    await exactly_once(member_node, channel, {"type": "m", "n": 1})
    assert [m.channel for m in await member_node.registry.members("kept")] == [channel]
    await idle.group_add("idle-group", "idle.queue")
    await sender.group_send("idle-group", {"type": "m", "n": 2})
    assert await within(sender.receive("idle.queue")) == {"type": "m", "n": 2}


async def test_close_pools_on_a_loop_without_a_node_does_nothing(make_layer):
    layer = make_layer()
    await layer.close_pools()
    assert layer.stats().channels == 0
