"""The room registry: records written with every membership change, queries from any process."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from broadcast_layer._protocol.scripts import Plan, script_name

from .conftest import eventually, nothing_arrives, within

ROOT = Path(__file__).resolve().parent.parent


async def test_rooms_sizes_members_and_groups_of_a_channel(nodes):
    a, b, observer = nodes
    ca, cb = await a.new_channel(), await b.new_channel()
    await a.group_add("lobby", ca)
    await b.group_add("lobby", cb)
    await b.group_add("games", cb)
    await a.set_channel_metadata(ca, {"user_id": 7, "name": "Ann"})

    page = await observer.registry.rooms()
    assert [(r.name, r.size, r.nodes) for r in page.rooms] == [("games", 1, 1), ("lobby", 2, 2)]
    assert page.total == 2
    assert page.next_offset is None
    assert [room.name for room in (await observer.registry.rooms(order="size")).rooms] == [
        "lobby",
        "games",
    ]
    assert await observer.registry.room_size("lobby") == 2
    members = {m.channel: m for m in await observer.registry.members("lobby")}
    assert set(members) == {ca, cb}
    assert members[ca].node == a.node_id
    assert members[cb].node == b.node_id
    assert members[ca].metadata == {"user_id": 7, "name": "Ann"}
    assert abs(members[ca].joined.timestamp() - time.time()) < 5
    assert set(await observer.registry.groups_of(cb)) == {"lobby", "games"}
    nodes_seen = {node.id: node for node in await observer.registry.nodes()}
    assert {a.node_id, b.node_id} <= set(nodes_seen)
    assert nodes_seen[a.node_id].pid == os.getpid()
    assert nodes_seen[a.node_id].prefix == a.config.prefix
    assert [info.channel for info in await observer.registry.node_channels(b.node_id)] == [cb]


async def test_the_sync_facade_gives_the_same_answers(nodes):
    a, observer = nodes[0], nodes[2]
    channel = await a.new_channel()
    await a.group_add("sync-room", channel)
    sync = observer.sync_registry
    assert await asyncio.to_thread(sync.room_size, "sync-room") == 1
    assert await asyncio.to_thread(sync.members, "sync-room") == await observer.registry.members(
        "sync-room"
    )
    assert (await asyncio.to_thread(sync.rooms)).rooms == (await observer.registry.rooms()).rooms
    assert await asyncio.to_thread(sync.groups_of, channel) == await observer.registry.groups_of(
        channel
    )
    assert await asyncio.to_thread(sync.members_per_node, "sync-room") == {a.node_id: 1}


async def test_discard_and_a_clean_shutdown_remove_records_at_once(make_layer):
    a, observer = make_layer(), make_layer()
    c1, c2 = await a.new_channel(), await a.new_channel()
    await a.group_add("r", c1)
    await a.group_add("r", c2)
    await a.group_discard("r", c1)
    assert [m.channel for m in await observer.registry.members("r")] == [c2]
    node_id = a.node_id
    await a.close()
    assert await observer.registry.room_size("r") == 0
    assert (await observer.registry.rooms()).rooms == ()
    assert node_id not in {node.id for node in await observer.registry.nodes()}
    assert await observer.registry.node_channels(node_id) == []


async def test_memberships_past_group_expiry_leave_the_answers(make_layer):
    layer = make_layer(group_expiry=0.3, heartbeat_interval=0.1, node_ttl=5)
    channel = await layer.new_channel()
    await layer.group_add("brief", channel)
    await asyncio.sleep(0.4)  # the behaviour under test is the passing of time
    assert await layer.registry.room_size("brief") == 0
    assert await layer.registry.members("brief") == []
    assert await layer.registry.groups_of(channel) == {}
    await eventually(lambda: "brief" not in layer.stats().groups)


async def test_rooms_are_paginated_sorted_and_filtered(layer):
    # Records of a node that is not running: a live node's re-assert would remove
    # memberships written behind its back.
    node_id = "0123456789abcdef"
    channel = f"specific.{node_id}!rooms"
    names = [f"room-{i:04d}" for i in range(1500)] + ["other-1", "other-2"]
    calls = [call for name in names
             for call in layer.nodes.current().core.calls.join(name, channel, node_id)]  # fmt: skip
    await layer.nodes.current().registry.host.run_all(calls)  # 1500 memberships in one round trip
    seen, offset = [], 0
    while offset is not None:
        page = await layer.registry.rooms(limit=400, offset=offset)
        seen += [room.name for room in page.rooms]
        offset = page.next_offset
    assert seen == sorted(names)
    assert page.total == len(names)
    filtered = await layer.registry.rooms(pattern="other-*")
    assert [room.name for room in filtered.rooms] == ["other-1", "other-2"]
    assert [r.name for r in (await layer.registry.rooms(pattern="room-00[12]?")).rooms] == [
        f"room-00{i}" for i in range(10, 30)
    ]


async def test_group_add_for_a_remote_channel_is_confirmed_before_it_returns(nodes):
    owner, other = nodes[0], nodes[1]
    for attempt in range(20):
        channel = await owner.new_channel()
        await other.group_add(f"remote-{attempt}", channel)
        assert f"remote-{attempt}" in owner.stats().groups  # the owner holds it already
        await nodes[2].group_send(f"remote-{attempt}", {"type": "m", "n": attempt})
        assert (await within(owner.receive(channel), 2))["n"] == attempt
    last = f"remote-{attempt}"
    await other.group_discard(last, channel)
    assert last not in owner.stats().groups
    await nodes[2].group_send(last, {"type": "m"})
    await nothing_arrives(owner, channel)


async def test_disconnect_reaches_a_channel_on_another_node(nodes):
    owner, admin = nodes[0], nodes[1]
    channel = await owner.new_channel()
    assert await admin.disconnect(channel) is True
    assert await within(owner.receive(channel)) == {"type": "broadcast.disconnect"}


async def test_operations_on_channels_of_a_gone_node_are_documented_no_ops(nodes, make_layer):
    gone = make_layer()
    channel = await gone.new_channel()
    await gone.close()
    assert await nodes[0].disconnect(channel) is False
    await nodes[0].group_add("nobody", channel)  # no owner to hold it: nothing recorded
    assert await nodes[0].registry.room_size("nobody") == 0


async def test_bad_input_raises_and_writes_nothing(layer):
    channel = await layer.new_channel()
    await layer.group_add("kept", channel)
    before = await layer.registry.channel(channel)
    with pytest.raises(TypeError):
        await layer.registry.members("bad name")
    with pytest.raises(TypeError):
        await layer.registry.room_size("x" * 200)
    with pytest.raises(ValueError, match="order"):
        await layer.registry.rooms(order="popularity")
    with pytest.raises(ValueError, match="limit"):
        await layer.registry.rooms(limit=0)
    with pytest.raises(TypeError, match="dict"):
        await layer.set_channel_metadata(channel, ["not", "a", "dict"])
    with pytest.raises(TypeError, match="JSON"):
        await layer.set_channel_metadata(channel, {"when": object()})
    with pytest.raises(ValueError, match="limit"):
        await layer.set_channel_metadata(channel, {"blob": "x" * 10_000})
    with pytest.raises(ValueError, match="process-specific"):
        await layer.set_channel_metadata("normal.channel", {"a": 1})
    with pytest.raises(TypeError):
        await layer.disconnect("bad name!")
    assert await layer.registry.channel(channel) == before


async def test_concurrent_churn_leaves_the_registry_equal_to_the_nodes_local_state(nodes):
    rng = random.Random()
    groups = [f"churn{i}" for i in range(5)]
    channels = {i: [await nodes[i].new_channel() for _ in range(4)] for i in range(3)}
    everyone = [c for chans in channels.values() for c in chans]

    async def churn(index: int) -> None:
        for _ in range(40):
            group, channel = rng.choice(groups), rng.choice(everyone)  # remote ones too
            if rng.random() < 0.55:
                await nodes[index].group_add(group, channel)
            else:
                await nodes[index].group_discard(group, channel)

    await asyncio.gather(*(churn(i) for i in range(3) for _ in range(3)))
    for group in groups:
        local = set().union(*(nodes[i].local_members(group) for i in range(3)))
        registered = {m.channel for m in await nodes[0].registry.members(group)}
        assert registered == local, group
        assert await nodes[0].registry.room_size(group) == len(local)
    listed = {room.name: room.size for room in (await nodes[0].registry.rooms()).rooms}
    expected = {g: len(set().union(*(n.local_members(g) for n in nodes))) for g in groups}
    assert listed == {g: size for g, size in expected.items() if size}


async def test_memberships_of_node_processes_are_visible_from_a_process_with_no_channel(
    node_processes, make_layer
):
    first, second = await asyncio.to_thread(node_processes), await asyncio.to_thread(node_processes)
    c1 = (await asyncio.to_thread(first.ask, op="new_channel"))["channel"]
    c2 = (await asyncio.to_thread(second.ask, op="new_channel"))["channel"]
    await asyncio.to_thread(first.ask, op="group_add", group="shared", channel=c1)
    await asyncio.to_thread(second.ask, op="group_add", group="shared", channel=c2)
    observer = make_layer()
    assert {m.channel for m in await observer.registry.members("shared")} == {c1, c2}
    assert len(await observer.registry.nodes()) == 2
    assert observer.stats().channels == 0


def _steps_of(plan: Plan[Any], steps: list[list[str]]) -> Plan[Any]:
    """``plan``, noting the scripts of each step it runs (a step is one round trip)."""
    calls = next(plan)
    while True:
        steps.append([script_name(call.script) for call in calls])
        try:
            calls = plan.send((yield calls))
        except StopIteration as stop:
            return stop.value


async def test_a_page_of_rooms_is_one_round_trip_when_no_node_is_dead(nodes):
    a, _, observer = nodes
    await a.group_add("lobby", await a.new_channel())
    steps: list[list[str]] = []
    host = observer.nodes.current().registry.host
    page = await host.run_plan(_steps_of(observer.registry.calls.rooms(), steps))
    assert [(r.name, r.size) for r in page.rooms] == [("lobby", 1)]
    assert steps == [["DEAD", "ROOMS"]]  # the look for dead nodes rides with the page


async def test_rooms_reaps_the_dead_nodes_it_finds_then_reads_the_page_again(
    node_processes, make_layer
):
    ttl, heartbeat = 1.0, 0.2
    victim = await asyncio.to_thread(node_processes, ttl, heartbeat)
    doomed = await asyncio.to_thread(victim.ask, op="new_channel")
    await asyncio.to_thread(victim.ask, op="group_add", group="gone", channel=doomed["channel"])
    observer = make_layer(node_ttl=ttl, heartbeat_interval=heartbeat)  # no channel: no reaping
    assert await observer.registry.room_size("gone") == 1
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(5)

    async def dead() -> bool:
        return doomed["node"] not in {node.id for node in await observer.registry.nodes()}

    await eventually(dead)
    assert await observer.registry.room_size("gone") == 1  # nobody has reaped it yet
    steps: list[list[str]] = []
    host = observer.nodes.current().registry.host
    page = await host.run_plan(_steps_of(observer.registry.calls.rooms(), steps))
    assert page.rooms == ()
    assert steps[0] == ["DEAD", "ROOMS"]
    assert steps[-1] == ["ROOMS"]  # the page again, after the reap
    assert await observer.registry.room_size("gone") == 0  # reaped by that call


async def test_a_killed_node_drops_out_within_the_ttl_and_is_reaped(node_processes, make_layer):
    ttl, heartbeat = 1.0, 0.2
    survivor = await asyncio.to_thread(node_processes, ttl, heartbeat)
    victim = await asyncio.to_thread(node_processes, ttl, heartbeat)
    kept = await asyncio.to_thread(survivor.ask, op="new_channel")
    keep = kept["channel"]
    doomed = await asyncio.to_thread(victim.ask, op="new_channel")
    for group in ("a", "b"):
        await asyncio.to_thread(survivor.ask, op="group_add", group=group, channel=keep)
        await asyncio.to_thread(victim.ask, op="group_add", group=group, channel=doomed["channel"])
    observer = make_layer(node_ttl=ttl, heartbeat_interval=heartbeat)
    assert await observer.registry.room_size("a") == 2
    victim.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.process.wait(5)

    async def gone() -> bool:
        live = {node.id for node in await observer.registry.nodes()}
        members = {m.channel for m in await observer.registry.members("a")}
        per_node = await observer.registry.members_per_node("a")
        # per-node counts drop a dead node before it is reaped, as members() does
        return doomed["node"] not in live and members == {keep} and per_node == {kept["node"]: 1}

    await eventually(gone)
    assert time.monotonic() - killed_at <= ttl + 0.5
    # reaped, not just hidden: sizes, the room index and its channel records are gone

    async def reaped() -> bool:
        return await observer.registry.room_size("a") == 1

    await eventually(reaped)
    rooms = (await observer.registry.rooms()).rooms
    assert {(r.name, r.size, r.nodes) for r in rooms} == {("a", 1, 1), ("b", 1, 1)}
    assert await observer.registry.node_channels(doomed["node"]) == []


async def test_metadata_round_trips_exactly_and_needs_a_known_channel(nodes):
    channel = await nodes[0].new_channel()
    await nodes[0].group_add("meta", channel)
    metadata = {"big": 123456789012345678, "empty": [], "name": "Zoë"}
    assert await nodes[1].set_channel_metadata(channel, metadata) is True
    assert (await nodes[1].registry.members("meta"))[0].metadata == metadata
    made_up = channel.replace("!", "!zz")
    assert await nodes[1].set_channel_metadata(made_up, {"a": 1}) is False
    assert await nodes[1].registry.channel(made_up) is None


async def test_disconnecting_an_unknown_channel_of_a_live_node_returns_false(nodes):
    real = await nodes[0].new_channel()
    assert await nodes[1].disconnect(real.replace("!", "!unknown")) is False
    assert await nodes[0].disconnect(real.replace("!", "!unknown")) is False


async def test_members_page_through_a_group_in_join_order_and_room_counts(nodes):
    channels = [await nodes[i % 2].new_channel() for i in range(7)]
    for i, channel in enumerate(channels):
        await nodes[i % 2].group_add("paged", channel)
    first = await nodes[2].registry.members("paged", limit=3)
    rest = await nodes[2].registry.members("paged", offset=3)
    assert [m.channel for m in first + rest] == channels
    room = await nodes[2].registry.room("paged")
    assert (room.size, room.nodes) == (7, 2)
    per_node = await nodes[2].registry.members_per_node("paged")
    assert per_node == {nodes[0].node_id: 4, nodes[1].node_id: 3}
    assert await nodes[2].registry.members_per_node("empty") == {}
    with pytest.raises(ValueError, match="limit"):
        await nodes[2].registry.members("paged", limit=0)


async def test_a_disconnect_reaches_even_a_full_mailbox(make_layer):
    layer = make_layer(capacity=1)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "filler"})
    assert await layer.disconnect(channel) is True
    assert (await within(layer.receive(channel)))["type"] == "filler"
    assert await within(layer.receive(channel)) == {"type": "broadcast.disconnect"}


async def test_a_members_score_is_its_join_time_in_whole_microseconds(layer, redis_client, prefix):
    """docs/protocol.md's layout: ``members:{G}`` scores a channel by Redis's clock when
    it joined, as an integer count of microseconds (a listpack parses no such score)."""
    channel = await layer.new_channel()
    seconds, micros = redis_client.time()
    before = seconds * 1_000_000 + micros
    await layer.group_add("scored", channel)
    seconds, micros = redis_client.time()
    score = redis_client.zscore(f"{prefix}:members:{{scored}}", channel)
    assert score == int(score)
    assert before <= score <= seconds * 1_000_000 + micros
    [member] = await layer.registry.members("scored")
    assert member.joined.timestamp() * 1_000_000 == pytest.approx(score, abs=1)


async def test_the_registry_writer_survives_a_failed_batch(layer, redis_client, prefix):
    channel = await layer.new_channel()
    redis_client.set(f"{prefix}:members:{{broken}}", "not a sorted set")  # JOIN will fail
    with pytest.raises(Exception, match="WRONGTYPE"):
        await layer.group_add("broken", channel)
    await layer.group_add("fine", channel)  # later writes still go through
    assert await layer.registry.room_size("fine") == 1


async def test_members_of_a_large_group_carry_their_metadata_and_pages(nodes):
    """Metadata is read per node with HMGETs of at most 1,000 names: 1,200 members of one
    node, every third with metadata, come back with exactly theirs, oldest join first."""
    layer, observer = nodes[0], nodes[2]
    channels = [await layer.new_channel() for _ in range(1200)]
    await asyncio.gather(*(layer.group_add("crowd", channel) for channel in channels))
    labelled = {channel: {"n": i} for i, channel in enumerate(channels) if i % 3 == 0}
    await asyncio.gather(*(layer.set_channel_metadata(c, m) for c, m in labelled.items()))
    members = await observer.registry.members("crowd")
    assert sorted(m.channel for m in members) == sorted(channels)
    assert {m.channel: m.metadata for m in members if m.metadata} == labelled
    assert {m.node for m in members} == {layer.node_id}
    assert [m.joined for m in members] == sorted(m.joined for m in members)
    page = await observer.registry.members("crowd", offset=999, limit=3)
    assert page == members[999:1002]
