"""The whole layer on a real local Redis Cluster (``cluster: True``): slot-local calls,
sharded delivery between layer instances, the registry's merged queries, the emitter.

Every test shares the session's cluster (``redis_cluster``) under its own prefix, and is
skipped where the cluster cannot run (no redis-cli, or a Redis before 7).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import pytest
from channels.exceptions import ChannelFull
from redis.crc import key_slot

from broadcast_layer import BroadcastChannelLayer
from broadcast_layer._protocol import scripts
from broadcast_layer._protocol.keys import CLUSTER_SHARDS, Keys, shard_tags
from broadcast_layer._protocol.scripts import Call
from broadcast_layer._redis.host import Host

from . import faults
from .cluster import RedisCluster
from .conftest import eventually, nothing_arrives, within

ClusterLayers = Callable[..., BroadcastChannelLayer]


@pytest.fixture
def cluster_layer(redis_cluster: RedisCluster, make_layer: ClusterLayers) -> ClusterLayers:
    """Build layers on the session's cluster under this test's prefix; closed afterwards."""
    return functools.partial(make_layer, hosts=[redis_cluster.url], cluster=True)


def test_the_shard_tags_spread_evenly_over_the_slots():
    """Shard k's slot is in the k-th of 60 equal slot ranges: 3 masters with the default
    even split get 20 shards each."""
    slots = [key_slot(tag.encode()) for tag in shard_tags(CLUSTER_SHARDS)]
    assert slots == sorted(slots)
    for masters in (2, 3, 4, 5, 6):
        per = [sum(1 for s in slots if s * masters // 16384 == m) for m in range(masters)]
        assert per == [CLUSTER_SHARDS // masters] * masters


def test_a_group_and_a_node_keep_their_names_in_one_slot():
    keys = Keys("p", cluster=True)
    group = {keys.group_channel("room"), keys.members("room"), keys.member_nodes("room"),
             *keys.rooms_of("room")}  # fmt: skip
    node_id = "0123456789abcdef"
    channel = f"specific.{node_id}!abc"
    node = {keys.node_channel(node_id), keys.node(node_id), keys.node_records(node_id),
            keys.node_records_staging(node_id), keys.node_metadata(node_id),
            keys.node_metadata_staging(node_id), keys.nodes_of(node_id),
            keys.credit(channel)}  # fmt: skip
    assert len({key_slot(name.encode()) for name in group}) == 1
    assert len({key_slot(name.encode()) for name in node}) == 1
    assert keys.group_of(keys.group_channel("room").encode()) == "room"


class CallLog:
    """Every script call the layer's hosts send, as (script, keys): batches as sent."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        run, pipeline = Host.run, Host._pipeline

        async def logged_run(host: Host, call: Call[Any]) -> Any:
            self.calls.append((call.script, tuple(call.keys)))
            return await run(host, call)

        async def logged_pipeline(host: Host, calls: list[Call[Any]]) -> list[Any]:
            for call in calls:  # a REGISTRY_BATCH, and each write it runs
                self.calls.append((call.script, tuple(call.keys)))
                self.calls.extend((part.script, tuple(part.keys)) for part in call.parts)
            return await pipeline(host, calls)

        monkeypatch.setattr(Host, "run", logged_run)
        monkeypatch.setattr(Host, "_pipeline", logged_pipeline)


async def test_every_script_call_touches_one_slot(cluster_layer, monkeypatch):
    """Each call the layer makes through a whole session of work names keys of one slot,
    and the session runs every script the layer has (so none escaped the check)."""
    log = CallLog(monkeypatch)
    extra = {"history": {"h.*": {"size": 10, "ttl": 60}},
             "durable_channels": {"jobs.*": {"claim_after": 5}}}  # fmt: skip
    a = cluster_layer(heartbeat_interval=0.2, node_ttl=1.0, channel_capacity={"small.*": 2},
                      **extra)  # fmt: skip
    b = cluster_layer(**extra)
    x, y = await a.new_channel(), await b.new_channel()
    more = [await a.new_channel() for _ in range(3)]  # joined at once: their node's side
    await asyncio.gather(*(a.group_add("crowd", c) for c in more))  # is one REGISTRY_BATCH
    small = await a.new_channel("small")  # counted from the start: CREDIT
    await b.send(small, {"type": "counted"})
    assert await within(a.receive(small)) == {"type": "counted"}
    await a.group_add("room", x)
    await b.group_add("room", y)
    await a.group_add("other", y)  # another node's channel: a control message
    await a.set_channel_metadata(x, {"user": 1})
    await b.send(x, {"type": "direct"})
    assert await within(a.receive(x)) == {"type": "direct"}
    await a.send("jobs", {"type": "job"})
    assert await within(b.receive("jobs")) == {"type": "job"}
    for n in range(2):  # a durable channel: send, take, acknowledge
        await a.send("jobs.work", {"type": "job", "n": n})
    assert [(await within(b.receive("jobs.work")))["n"] for _ in range(2)] == [0, 1]
    await b.group_add("h.room", y)  # a history group: append and read
    await a.group_send("h.room", {"type": "kept"})
    assert (await within(b.receive(y)))["type"] == "kept"
    assert len((await a.group_history("h.room")).messages) == 1
    await a.group_send("room", {"type": "hello"})
    assert await within(b.receive(y)) == {"type": "hello"}
    registry = a.registry
    assert [room.name for room in (await registry.rooms()).rooms] == [
        "crowd", "h.room", "other", "room"]  # fmt: skip
    assert (await registry.rooms("r*", order="size")).rooms[0].size == 2
    assert await registry.room_size("room") == 2
    assert (await registry.room("room")).nodes == 2
    assert sorted((await registry.members_per_node("room")).values()) == [1, 1]
    assert {m.channel: m.metadata for m in await registry.members("room")}[x] == {"user": 1}
    assert set(await registry.groups_of(y)) == {"room", "other", "h.room"}
    assert len(await registry.nodes()) == 2
    assert len(await registry.node_channels(b.node_id)) == 1
    await a.nodes.current().registry.reassert()
    await a.group_discard("room", x)
    a.nodes.current().channels.sweep(float("inf"))  # abandons x: CLOSE_RECORD
    await b.close()  # a clean close reaps itself
    d = cluster_layer(heartbeat_interval=0.2, node_ttl=1.0)
    z = await d.new_channel()
    await d.group_add("room", z)
    node = d.nodes.current()
    await node.core.close_tasks()  # no more heartbeats, records left behind: a dead node
    for host in node.core.hosts:
        await host.close()
    await eventually(lambda: _reaped(a, d.node_id), 10)
    seen = {script for script, _ in log.calls}
    for script, keys in log.calls:
        slots = {key_slot(key.encode()) for key in keys}
        assert len(slots) <= 1, f"{_name(script)} crosses slots: {keys}"
    missing = {_name(script) for script in _all_scripts()} - {_name(s) for s in seen}
    assert not missing, f"not exercised: {sorted(missing)}"


async def _reaped(layer: BroadcastChannelLayer, node_id: str) -> bool:
    await layer.registry.rooms()  # reaps the dead first
    return node_id not in {node.id for node in await layer.registry.nodes()} and (
        await layer.registry.room_size("room") == 0
    )


def _all_scripts() -> set[str]:
    return {value for name, value in vars(scripts).items()
            if name.isupper() and not name.startswith("_") and isinstance(value, str)
            and "redis.call" in value} - scripts.ONE_SERVER  # fmt: skip


def _name(script: str) -> str:
    return next(name for name, value in vars(scripts).items() if value is script)


async def test_groups_across_two_layers(cluster_layer):
    """group_add returns subscribed; group_send reaches each node once; the last local
    member's group_discard unsubscribes that node only."""
    a, b, sender = cluster_layer(), cluster_layer(), cluster_layer()
    x1, x2, y = await a.new_channel(), await a.new_channel(), await b.new_channel()
    for channel, layer in ((x1, a), (x2, a), (y, b)):
        await layer.group_add("chat", channel)
    await sender.group_send("chat", {"type": "m", "n": 1})
    for channel, layer in ((x1, a), (x2, a), (y, b)):
        assert await within(layer.receive(channel)) == {"type": "m", "n": 1}
    await a.group_discard("chat", x1)
    await sender.group_send("chat", {"type": "m", "n": 2})
    assert await within(a.receive(x2)) == {"type": "m", "n": 2}
    assert await within(b.receive(y)) == {"type": "m", "n": 2}
    await nothing_arrives(a, x1)
    await a.group_discard("chat", x2)
    await b.group_discard("chat", y)
    await eventually(lambda: not a.nodes.current().core.hosts[0].subscriber.masters - {
        _owner_of_node_channel(a)}, 10)  # fmt: skip


def _owner_of_node_channel(layer: BroadcastChannelLayer) -> tuple[str, int]:
    host = layer.nodes.current().core.hosts[0]
    node = host.client.get_node_from_key(layer.nodes.current().core.node_channel)
    return (node.host, int(node.port))


async def test_one_sharded_connection_per_master_of_the_nodes_groups(cluster_layer, redis_cluster):
    """Groups on every master: the node subscribes once at each owner, not per group."""
    layer = cluster_layer()
    channel = await layer.new_channel()
    keys = Keys(layer.config.prefix, cluster=True)
    groups = [f"g{i}" for i in range(40)]
    for group in groups:
        await layer.group_add(group, channel)
    owners = {redis_cluster.owner_of(keys.group_channel(g)).address for g in groups}
    owners.add(redis_cluster.owner_of(keys.node_channel(layer.node_id)).address)
    assert layer.nodes.current().core.hosts[0].subscriber.masters == owners
    assert len(owners) == 3


async def test_sends_normal_channels_and_capacity(cluster_layer):
    a, b = cluster_layer(capacity=2), cluster_layer(capacity=2)
    x = await a.new_channel()
    await b.send(x, {"type": "1"})
    await b.send(x, {"type": "2"})
    with pytest.raises(ChannelFull):
        await b.send(x, {"type": "3"})
    assert await within(a.receive(x)) == {"type": "1"}
    await a.send("work", {"type": "w1"})
    await a.send("work", {"type": "w2"})
    with pytest.raises(ChannelFull):
        await a.send("work", {"type": "w3"})
    assert [await within(b.receive("work")) for _ in range(2)] == [
        {"type": "w1"},
        {"type": "w2"},
    ]


async def test_rooms_merge_the_index_shards_with_correct_pages(cluster_layer):
    """60 rooms spread over the shards: pages by name and by size tile the whole list."""
    layer = cluster_layer()
    channels = [await layer.new_channel() for _ in range(3)]
    names = [f"room{i:02d}" for i in range(60)]
    for i, name in enumerate(names):
        for channel in channels[: 1 + i % 3]:
            await layer.group_add(name, channel)
    registry = layer.registry
    by_name, offset = [], 0
    while offset is not None:
        page = await registry.rooms(offset=offset, limit=7)
        assert page.total == 60
        by_name += page.rooms
        offset = page.next_offset
    assert [room.name for room in by_name] == names
    assert {room.name: room.size for room in by_name} == {n: 1 + i % 3 for i, n in enumerate(names)}
    by_size = (await registry.rooms(order="size", limit=60)).rooms
    assert [room.size for room in by_size] == sorted((1 + i % 3 for i in range(60)), reverse=True)
    matched = await registry.rooms("room1?", limit=5, offset=5)
    assert [room.name for room in matched.rooms] == names[15:20]
    with pytest.raises(ValueError, match="offset"):
        await registry.rooms(offset=10_000)


async def test_the_emitter_and_the_sync_registry(cluster_layer, settings):
    from asgiref.sync import sync_to_async

    from broadcast_layer import Emitter

    layer = cluster_layer()
    settings.CHANNEL_LAYERS = {"cluster": {"BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
                                           "CONFIG": {"hosts": layer.config.hosts,
                                                      "cluster": True,
                                                      "prefix": layer.config.prefix}}}  # fmt: skip
    channel = await layer.new_channel()
    await layer.group_add("news", channel)

    def emit() -> tuple[int, int, int]:
        emitter = Emitter("cluster")
        result = emitter.group("news", {"type": "n"})
        emitter.channel(channel, {"type": "direct"})
        size = emitter.layer.sync_registry.room("news").size
        return result.nodes, result.members, size

    assert await sync_to_async(emit, thread_sensitive=False)() == (1, 1, 1)
    assert await within(layer.receive(channel)) == {"type": "n"}
    assert await within(layer.receive(channel)) == {"type": "direct"}


async def test_ping_flush_and_close_pools_on_the_cluster(cluster_layer, redis_cluster):
    """flush() deletes the prefix's keys on every master; close_pools() reopens on use."""
    layer = cluster_layer()
    await layer.ping()
    channels = [await layer.new_channel() for _ in range(3)]
    for i in range(30):  # groups on every master
        await layer.group_add(f"g{i}", channels[i % 3])
    await layer.send("queue", {"type": "q"})
    prefix = layer.config.prefix

    def keys_left() -> int:
        return sum(len(node.call("KEYS", f"{prefix}:*")) for node in redis_cluster.masters())

    assert keys_left() > 30
    await layer.close_pools()
    await layer.group_send("g1", {"type": "after close_pools"})
    assert await within(layer.receive(channels[1])) == {"type": "after close_pools"}
    await layer.flush()
    assert keys_left() == 0


async def test_a_history_group_on_the_cluster(cluster_layer):
    """A history group's append publishes with SPUBLISH from its one-slot script (its
    stream and meta share the group's slot); offsets and the kept pages work as on one
    server. A durable channel (one stream key) works too."""
    history = {"chat.*": {"size": 100, "ttl": 3600}}
    sender, member = cluster_layer(history=history), cluster_layer(history=history)
    channel = await member.new_channel()
    await member.group_add("chat.room", channel)
    for n in range(3):
        assert await sender.group_send("chat.room", {"type": "m", "n": n}) == 1
    received = [await within(member.receive(channel)) for _ in range(3)]
    assert [m["history"]["offset"] for m in received] == [1, 2, 3]
    page = await sender.group_history("chat.room", limit=2)
    assert page.complete
    assert [m.message["n"] for m in page.messages] == [1, 2]


async def test_a_history_group_catches_up_once_its_own_master_is_back(cluster_layer, redis_cluster):
    """A node's sharded connections to two masters are killed; the group's comes back,
    the other (its node channel's master refuses new clients) does not. What the group
    missed arrives then, before connection_restored (which waits for every master), and
    once: the later restore reads nothing twice, and a group on the third master, whose
    connection stayed up, is not read at all."""
    from broadcast_layer.signals import connection_lost, connection_restored

    history = {"chat.*": {"size": 100, "ttl": 3600}}
    sender, member = cluster_layer(history=history), cluster_layer(history=history)
    channel = await member.new_channel()
    keys = Keys(member.config.prefix, cluster=True)
    other = redis_cluster.owner_of(keys.node_channel(member.node_id))
    group = next(g for g in (f"chat.{n}" for n in range(100))
                 if redis_cluster.owner_of(keys.group_channel(g)) is not other)  # fmt: skip
    owner = redis_cluster.owner_of(keys.group_channel(group))
    calm = next(g for g in (f"chat.calm{n}" for n in range(100))
                if redis_cluster.owner_of(keys.group_channel(g)) not in (other, owner))  # fmt: skip
    for joined in (group, calm):
        await member.group_add(joined, channel)
        await sender.group_send(joined, {"type": "m", "n": 0})
        assert (await within(member.receive(channel)))["n"] == 0
    # The read script's first use loads it on every master, which the refusing one
    # would refuse: load it now.
    await member.group_history(group)
    events: list[str] = []

    def on_event(sender: object, node_id: str, **kwargs: object) -> None:
        if node_id == member.node_id:
            events.append("lost" if kwargs["signal"] is connection_lost else "restored")

    connection_lost.connect(on_event)
    connection_restored.connect(on_event)
    try:
        client = owner.client()
        try:
            data = sender.encode({"type": "m", "n": 1})
            faults.append_unpublished(client, keys.history(group), keys.history_meta(group), data)
        finally:
            client.close()
        with faults.refusing_new_clients(f"redis://127.0.0.1:{other.port}") as admin:
            await asyncio.to_thread(admin.client_kill_filter, _type="pubsub", skipme=True)
            await asyncio.to_thread(
                faults.kill_clients, f"redis://127.0.0.1:{owner.port}", "pubsub"
            )
            missed = await within(member.receive(channel), 20)
            assert events == ["lost"]  # the other master's connection is still down
        assert missed["n"] == 1
        await eventually(lambda: events == ["lost", "restored"], 30)
        await sender.group_send(group, {"type": "m", "n": 2})
        assert (await within(member.receive(channel)))["n"] == 2
        await asyncio.sleep(0.3)  # a read the restore started would have been made by now
        assert member.stats().history_reads == 1  # the group's catch-up, and nothing else
    finally:
        connection_lost.disconnect(on_event)
        connection_restored.disconnect(on_event)
