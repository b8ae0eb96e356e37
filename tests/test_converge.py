"""The registry converges to the nodes' state after Redis lost or missed their writes.

Each test causes the fault for real (FLUSHALL, a restart without persistence, a
partition during which writes fail, SCRIPT FLUSH) on a redis-server of its own, then
compares what the registry answers with what the nodes hold in memory.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from broadcast_layer import RedisUnavailable
from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.layer import BroadcastChannelLayer
from broadcast_layer.registry import Room

from . import faults
from .conftest import eventually

FAST = {"heartbeat_interval": 0.2, "node_ttl": 5.0}
CONVERGE_WITHIN = 10.0  # generous: a loaded machine; convergence takes ~1 heartbeat


@pytest.fixture
def own_redis() -> Any:
    """A redis-server of this test's own, free to be flushed, restarted and cut off."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
async def make(own_redis: EmbeddedRedis) -> AsyncIterator[Callable[..., BroadcastChannelLayer]]:
    layers: list[BroadcastChannelLayer] = []

    def factory(**config: Any) -> BroadcastChannelLayer:
        layer = BroadcastChannelLayer(hosts=[own_redis.url], prefix="conv", **{**FAST, **config})
        layers.append(layer)
        return layer

    yield factory
    for layer in layers:
        await layer.close()


async def view(observer: BroadcastChannelLayer, channels: list[str]) -> dict[str, Any]:
    """What the registry says about rooms, members, nodes and the given channels."""
    registry = observer.registry
    rooms = (await registry.rooms(limit=1000)).rooms
    out: dict[str, Any] = {
        "rooms": sorted((room.name, room.size, room.nodes) for room in rooms),
        "room": {room.name: await registry.room(room.name) for room in rooms},
        "nodes": sorted(node.id for node in await registry.nodes()),
        "members": {},
        "channels": {},
    }
    for room in rooms:
        members = await registry.members(room.name)
        out["members"][room.name] = sorted((m.channel, m.node, repr(m.metadata)) for m in members)
    for channel in channels:
        info = await registry.channel(channel)
        out["channels"][channel] = info and (sorted(info.groups), info.metadata)
    return out


def expected(
    layers: list[BroadcastChannelLayer],
    channels: dict[str, BroadcastChannelLayer],
    metadata: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The same view, built from the nodes' memory (their local memberships)."""
    rooms: dict[str, list[tuple[str, str | None, str]]] = {}
    holders: dict[str, set[str]] = {}
    groups_of: dict[str, list[str]] = {channel: [] for channel in channels}
    for layer in layers:
        for group in layer.stats().groups:
            for channel in layer.local_members(group):
                node = layer.node_id if "!" in channel else None
                rooms.setdefault(group, []).append((channel, node, repr(metadata.get(channel, {}))))
                holders.setdefault(group, set()).add(layer.node_id)
                groups_of.setdefault(channel, []).append(group)
    sizes = {name: Room(name, len(members), len(holders[name])) for name, members in rooms.items()}
    return {
        "rooms": sorted((room.name, room.size, room.nodes) for room in sizes.values()),
        "room": sizes,
        "nodes": sorted(layer.node_id for layer in layers),
        "members": {name: sorted(members) for name, members in rooms.items()},
        "channels": {
            channel: (sorted(groups_of[channel]), metadata.get(channel, {}))
            for channel in channels
            if "!" in channel
        },
    }


async def converged(
    observer: BroadcastChannelLayer,
    layers: list[BroadcastChannelLayer],
    channels: dict[str, BroadcastChannelLayer],
    metadata: dict[str, dict[str, Any]],
) -> float:
    """Wait until the registry equals the nodes' state; return how long that took."""
    start = time.monotonic()
    want = expected(layers, channels, metadata)
    names = [channel for channel in channels if "!" in channel]

    async def equal() -> bool:
        try:
            return await view(observer, names) == want
        except RedisUnavailable:  # the observer's pooled connection died with the fault
            return False

    try:
        await eventually(equal, CONVERGE_WITHIN)
    except TimeoutError:
        assert await view(observer, names) == want  # shows the difference
    return time.monotonic() - start


async def populate(
    make: Callable[..., BroadcastChannelLayer],
) -> tuple[list[BroadcastChannelLayer], dict[str, BroadcastChannelLayer], dict[str, Any]]:
    """Two nodes, members of three rooms on both, metadata, a normal channel in a room."""
    a, b = make(), make()
    channels: dict[str, BroadcastChannelLayer] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for layer, rooms in ((a, ["lobby", "games"]), (b, ["lobby", "chess"])):
        for i in range(4):
            channel = await layer.new_channel()
            channels[channel] = layer
            for room in rooms[: 1 + i % 2]:
                await layer.group_add(room, channel)
            if i % 2 == 0:
                metadata[channel] = {"user": f"{layer.node_id[:4]}-{i}", "n": i}
                assert await layer.set_channel_metadata(channel, metadata[channel])
    lonely = await a.new_channel()  # opened, in no group: its record must come back too
    channels[lonely] = a
    await a.group_add("lobby", "jobs")  # a normal channel a forwards to
    channels["jobs"] = a
    return [a, b], channels, metadata


async def heartbeats(url: str, layers: list[BroadcastChannelLayer], count: int = 1) -> None:
    """Wait until each node's heartbeat loop has refreshed its record ``count`` times."""
    client = redis.Redis.from_url(url, decode_responses=True)
    seen: dict[str, set[str]] = {layer.node_id: set() for layer in layers}

    def beaten() -> bool:
        for node_id, beats in seen.items():
            beat = client.hget(f"conv:node:{{{node_id}}}", "heartbeat")
            if beat is not None:
                beats.add(beat)
        return all(len(beats) > count for beats in seen.values())  # the birth's, then ticks'

    try:
        await eventually(beaten, CONVERGE_WITHIN)
    finally:
        client.close()


async def registered(url: str, layers: list[BroadcastChannelLayer]) -> None:
    """Wait for each node's first heartbeat tick, which finds nothing lost (see below)."""
    await heartbeats(url, layers)
    assert [layer.stats().reasserts for layer in layers] == [0] * len(layers)


async def test_a_new_node_never_reasserts_but_does_after_flushall(make, own_redis):
    """A node is born with its generation, written before its first record, so what it
    does before its first heartbeat (open channels, join groups, add a normal channel)
    costs no re-assert; Redis losing its data still makes it re-assert at once."""
    a, b = layers = [make(), make()]
    channels: dict[str, BroadcastChannelLayer] = {}
    for i in range(6):
        channel = await a.new_channel()
        channels[channel] = a
        await a.group_add(f"g{i % 3}", channel)
    await a.group_add("g0", "jobs")
    await b.group_add("g1", "work")  # b's only record: a normal channel's membership
    channels.update(jobs=a, work=b)
    assert [node.id for node in await a.registry.nodes()] == [a.node_id, b.node_id]
    await heartbeats(own_redis.url, layers, 3)
    assert [layer.stats().reasserts for layer in layers] == [0, 0]
    faults.flushall(own_redis.url)
    await eventually(lambda: [layer.stats().reasserts for layer in layers] == [1, 1],
                     CONVERGE_WITHIN)  # fmt: skip
    await converged(make(), layers, channels, {})


async def test_a_heartbeat_tick_waits_for_the_birth_it_could_overtake(make, own_redis, monkeypatch):
    """The birth goes through the ordered writer and a tick's heartbeat does not: a tick
    that runs while the birth is still on its way skips the heartbeat instead of reaching
    Redis first, finding no generation and re-asserting a node that lost nothing."""
    layer = make()
    node = layer.nodes.current()
    writer = node.core.registry_host.writer
    release = asyncio.Event()
    send = writer._run_all

    async def held(calls: list[Any]) -> list[Any]:  # Redis is real; only the turn waits
        await release.wait()
        return await send(calls)

    monkeypatch.setattr(writer, "_run_all", held)
    born = node.core.register()
    assert born is not None
    await node.upkeep._tick(time.monotonic())
    client = redis.Redis.from_url(own_redis.url)
    try:
        assert not client.exists(f"conv:node:{{{layer.node_id}}}")  # no heartbeat went out
        release.set()
        await born
        assert client.hget(f"conv:node:{{{layer.node_id}}}", "gen") is not None
    finally:
        client.close()
    await node.upkeep._tick(time.monotonic())  # born: this tick beats, and finds it
    assert layer.stats().reasserts == 0
    assert [n.id for n in await layer.registry.nodes()] == [layer.node_id]


async def test_after_flushall_every_record_comes_back_within_a_heartbeat(make, own_redis):
    layers, channels, metadata = await populate(make)
    observer = make()
    await converged(observer, layers, channels, metadata)
    await registered(own_redis.url, layers)
    before = {m.channel: m.joined for m in await observer.registry.members("lobby")}
    faults.flushall(own_redis.url)
    await converged(observer, layers, channels, metadata)
    after = {m.channel: m.joined for m in await observer.registry.members("lobby")}
    assert after.keys() == before.keys()
    for channel, joined in after.items():  # join times are the nodes', not the re-assert's
        assert abs((joined - before[channel]).total_seconds()) < 1.5


async def test_after_a_restart_without_persistence_every_record_comes_back(make, own_redis):
    layers, channels, metadata = await populate(make)
    observer = make()
    await registered(own_redis.url, layers)
    faults.restart_without_persistence(own_redis)
    await converged(observer, layers, channels, metadata)
    # delivery and the registry agree: the listed members get a group message
    assert await observer.group_send("games", {"type": "after"}) == 1  # one node holds games
    for member in await observer.registry.members("games"):
        owner = channels[member.channel]
        async with asyncio.timeout(5):
            while (await owner.receive(member.channel))["type"] != "after":
                pass


async def test_metadata_set_while_redis_lacks_the_record_is_kept_and_written_back(make, own_redis):
    (a,) = layers = [make()]
    channel = await a.new_channel()
    await a.group_add("room", channel)
    await registered(own_redis.url, layers)
    faults.flushall(own_redis.url)
    # Redis lost the record, but the node has the channel: it keeps the metadata.
    assert await a.set_channel_metadata(channel, {"name": "Ann"}) is True
    await converged(make(), layers, {channel: a}, {channel: {"name": "Ann"}})


@pytest.mark.slow
async def test_writes_that_failed_during_a_partition_are_superseded(make, own_redis):
    a = make(expiry=0.5, subscribe_timeout=2)  # a channel nobody receives on goes in 0.5 s
    b = make(group_expiry=1.5, subscribe_timeout=2)
    c1, c2, c3 = [await a.new_channel() for _ in range(3)]
    cb = await b.new_channel()
    # c1 and c2 have consumers waiting in receive() all along; c3 and cb have none
    consumers = [asyncio.create_task(a.receive(channel)) for channel in (c1, c2)]
    consumers.append(asyncio.create_task(b.receive(cb)))
    for channel in (c1, c2, c3):
        await a.group_add("room", channel)
    await a.group_add("side", c3)
    metadata = {c1: {"v": 1}}
    assert await a.set_channel_metadata(c1, metadata[c1])
    await registered(own_redis.url, [a, b])
    await b.group_add("room", cb)  # expires 1.5 s from now: during the partition
    try:
        with faults.partition(own_redis.url):
            with pytest.raises(RedisUnavailable):
                await a.group_discard("room", c2)  # gone from memory, its LEAVE failed
            with pytest.raises(RedisUnavailable):
                await a.set_channel_metadata(c1, {"v": 2})  # kept by the node all the same
            metadata[c1] = {"v": 2}
            # c3 is abandoned and cb's membership expires while every write fails
            await eventually(lambda: not a.local_members("side") and not b.local_members("room"), 5)
        channels = {c1: a, c2: a, cb: b}  # c3 is gone: checked below
        await converged(make(), [a, b], channels, metadata)
        assert await a.registry.channel(c3) is None  # the abandoned channel's record is gone
        assert [info.channel for info in await a.registry.node_channels(b.node_id)] == [cb]
    finally:
        for consumer in consumers:
            consumer.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)


async def test_repeated_reasserts_change_nothing(make, own_redis):
    layers, _, _ = await populate(make)
    await registered(own_redis.url, layers)
    nodes = [layer.nodes.current() for layer in layers]
    for node in nodes:
        await node.registry.reassert()
    snapshot = stored(own_redis.url)
    for _ in range(5):
        for node in nodes:
            await node.registry.reassert()
    assert stored(own_redis.url) == snapshot
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    try:  # the counts equal what they count
        for group, size in client.zrange("conv:{rooms}:by-size", 0, -1, withscores=True):
            assert client.zcard(f"conv:members:{{{group}}}") == size
            per_node = client.hgetall(f"conv:members:{{{group}}}:nodes")
            assert {node: int(count) for node, count in per_node.items()} == {
                layer.node_id: len(layer.local_members(group))
                for layer in layers
                if layer.local_members(group)
            }
    finally:
        client.close()


def stored(url: str) -> dict[str, Any]:
    """Every key of the "conv" prefix with its content (node records without heartbeats)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        out: dict[str, Any] = {}
        for key in client.scan_iter(match="conv:*"):
            kind = client.type(key)
            if kind == "zset":
                out[key] = client.zrange(key, 0, -1, withscores=True)
                if key == "conv:nodes":
                    out[key] = sorted(member for member, _ in out[key])
            elif kind == "hash":
                fields: dict[str, Any] = client.hgetall(key)
                for volatile in ("heartbeat", "gen"):
                    fields.pop(volatile, None)
                out[key] = {  # channel records are JSON objects: compare them parsed
                    name: json.loads(value) if value.startswith("{") else value
                    for name, value in fields.items()
                }
            else:
                out[key] = kind
        return out
    finally:
        client.close()


async def test_a_script_reloaded_after_noscript_keeps_the_write_order(make, own_redis):
    a = make(heartbeat_interval=5, node_ttl=15)  # no heartbeat reloads scripts meanwhile
    channel = await a.new_channel()
    await a.group_discard("room", channel)  # Redis has run LEAVE: the node marks it loaded
    faults.script_flush(own_redis.url)
    # One batch: JOIN (a script the node loads first), LEAVE (lost: NOSCRIPT), JOIN.
    await asyncio.gather(
        a.group_add("room", channel), a.group_discard("room", channel), a.group_add("room", channel)
    )
    assert a.local_members("room") == {channel}
    assert [m.channel for m in await a.registry.members("room")] == [channel]
    assert (await a.registry.room("room")).size == 1


async def test_a_pubsub_reconnect_makes_the_node_reassert(make, own_redis):
    (a,) = layers = [make()]
    channel = await a.new_channel()
    await a.group_add("room", channel)
    await registered(own_redis.url, layers)
    done = a.stats().reasserts
    await asyncio.sleep(1.0)  # five heartbeats without a fault: no re-assert
    assert a.stats().reasserts == done
    faults.kill_clients(own_redis.url, "pubsub")
    await eventually(lambda: a.stats().reasserts > done, CONVERGE_WITHIN)
    await converged(make(), layers, {channel: a}, {})


async def test_a_node_larger_than_one_script_converges_chunk_by_chunk(make, own_redis, monkeypatch):
    monkeypatch.setattr("broadcast_layer._protocol.records.CHUNK", 3)  # 11 channels, 7 groups
    (a,) = layers = [make()]
    channels = {await a.new_channel(): a for _ in range(11)}
    for i, channel in enumerate(channels):
        await a.group_add(f"g{i % 7}", channel)
    await registered(own_redis.url, layers)
    faults.flushall(own_redis.url)
    await converged(make(), layers, channels, {})


async def test_redis_losing_its_data_during_a_reassert_leaves_no_generation(make, own_redis):
    a = make(heartbeat_interval=5, node_ttl=15)  # no heartbeat tick during the test
    channel = await a.new_channel()
    await a.group_add("room", channel)
    node = a.nodes.current()
    calls = node.registry.records.reassert_calls(node.subscriptions, *node.registry.loss_counters())
    # BEGIN and CHANNELS ran, then Redis lost everything, then SWAP ran: it swaps nothing
    await node.registry.host.run_all(calls[:2])
    faults.flushall(own_redis.url)
    assert (await node.registry.host.run_all(calls[2:]))[0] is None
    heartbeat = node.core.calls.heartbeat(node.id, 0.0, 1)
    assert await node.registry.run(heartbeat) == 0  # so the next tick re-asserts again
    await node.registry.reassert()
    assert await node.registry.run(heartbeat) == 1
    await converged(make(), [a], {channel: a}, {})
