"""The demo's presence lists scale linearly: one bounded read per join, then batched diffs.

Against the demo's own consumer on the real layer and a real redis-server: a join costs
the same few Redis commands whatever the room's size, a node's joins and leaves of one
interval reach each member as one message, and a list built the way the page builds it
stays equal to the registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.layer import BroadcastChannelLayer
from demo_chat.chat import presence

from .test_demo_chat import TIMEOUT, connect

ROOM, GROUP = "lobby", "chat.lobby"


class PresenceView:
    """A presence list kept the way the room page's script keeps it (room.html)."""

    def __init__(self) -> None:
        self.people: dict[str, dict[str, str]] = {}
        self.counts: dict[str, int] = {}
        self.frames = 0  # presence frames applied

    def apply(self, frame: dict[str, Any]) -> bool:
        """Apply a presence frame (True), or ignore any other frame (False)."""
        kind = frame["type"]
        if kind == "presence":
            self.people = {member["id"]: member for member in frame["members"]}
            self.counts = dict(frame["counts"])
        elif kind == "presence.diff":
            for gone in frame["left"]:
                self.people.pop(gone, None)
            self.people.update((member["id"], member) for member in frame["joined"])
            self.counts[frame["node_id"]] = frame["count"]
        elif kind == "presence.gone":
            dead = set(frame["node_ids"])
            self.people = {k: p for k, p in self.people.items() if p["node_id"] not in dead}
            self.counts = {node: n for node, n in self.counts.items() if node not in dead}
        else:
            return False
        self.frames += 1
        return True

    @property
    def names(self) -> set[str]:
        return {person["name"] for person in self.people.values()}

    @property
    def total(self) -> int:
        return max(sum(self.counts.values()), len(self.people))


async def read_until(
    communicator: WebsocketCommunicator, view: PresenceView, names: Iterable[str]
) -> None:
    """Apply the member's frames until its list shows exactly ``names``."""
    expected = set(names)
    async with asyncio.timeout(TIMEOUT):
        while view.names != expected or view.total != len(expected):
            view.apply(await communicator.receive_json_from(TIMEOUT))


async def read_frames(communicator: WebsocketCommunicator, view: PresenceView, count: int) -> None:
    """Apply the member's next ``count`` frames, which must all be presence frames."""
    for _ in range(count):
        frame = await communicator.receive_json_from(TIMEOUT)
        assert view.apply(frame), frame


async def use_layer(settings: Any, url: str, prefix: str, **config: Any) -> BroadcastChannelLayer:
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
        "CONFIG": {"hosts": [url], "prefix": prefix, **config},
    }}  # fmt: skip
    layer: BroadcastChannelLayer = get_channel_layer()
    return layer


async def close(layer: BroadcastChannelLayer, members: list[WebsocketCommunicator]) -> None:
    """Disconnect the members, send the hub's last diffs, then close the layer."""
    for communicator in members:
        await communicator.disconnect()
    await presence.hub(layer).aclose()
    await layer.close()


def command_calls(server: EmbeddedRedis) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(server.url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


@pytest.mark.parametrize("size", [5, 50])
async def test_a_join_costs_a_few_redis_commands_whatever_the_room_size(settings, prefix, size):
    """The 51st join of a room costs what the 6th does: its own writes, one members page,
    the per-node counts and one PUBLISH; each member gets one diff. (Before diffs, every
    member read the whole list again on every join: N reads and N list frames.)
    """
    settings.CHAT_PRESENCE_INTERVAL = 3600  # diffs go out when the test flushes
    with EmbeddedRedis() as server:
        # No heartbeat tick or dead-node check within the test: only the join is counted.
        layer = await use_layer(settings, server.url, prefix, heartbeat_interval=60, node_ttl=120)
        members: list[WebsocketCommunicator] = []
        try:
            views = []
            for i in range(size):
                members.append(await connect(ROOM, {"chat_name": f"m{i}"}))
                views.append(PresenceView())
            await presence.hub(layer).flush()
            everyone = {f"m{i}" for i in range(size)}
            for communicator, view in zip(members, views, strict=True):
                await read_frames(communicator, view, 2)  # the list on join, one diff
                assert view.names == everyone
            before = command_calls(server)

            members.append(await connect(ROOM, {"chat_name": "newcomer"}))
            await read_frames(members[-1], PresenceView(), 1)
            await presence.hub(layer).flush()
            for communicator, view in zip(members, views, strict=False):
                await read_frames(communicator, view, 1)  # one diff, not a list per join
                assert view.names == everyone | {"newcomer"}
                assert view.total == size + 1

            calls = command_calls(server)
            spent = {name: n - before.get(name, 0) for name, n in calls.items()}
            # new_channel (1), 3 group_adds (the room, its history group and everyone's;
            # 2 each: the group's side and the node's), set_metadata (1), the members page
            # (2: entries, then the one node's metadata) and the per-node counts (2:
            # counts, then liveness) are 12 EVALSHA whatever the size (before diffs:
            # size + 5)
            assert spent["evalsha"] <= 13, spent
            assert spent["publish"] == 1, spent  # the one diff
            # Inside the scripts: one record read per member listed, at most one page.
            assert spent.get("hget", 0) <= presence.PRESENCE_LIMIT + 10, spent
        finally:
            await close(layer, members)


async def test_joins_and_leaves_of_one_interval_reach_each_member_as_one_diff(
    settings, redis_url, prefix
):
    settings.CHAT_PRESENCE_INTERVAL = 3600  # nothing is sent until the test flushes
    layer = await use_layer(settings, redis_url, prefix)
    hub = presence.hub(layer)
    members: list[WebsocketCommunicator] = []
    try:
        members.append(await connect(ROOM, {"chat_name": "observer"}))
        observer = PresenceView()
        await read_until(members[0], observer, {"observer"})
        for i in range(20):
            members.append(await connect(ROOM, {"chat_name": f"j{i}"}))
        joined = {f"j{i}" for i in range(20)}
        assert await members[0].receive_nothing(0.2)  # the joins wait for the interval's end
        await hub.flush()
        await read_until(members[0], observer, joined | {"observer"})
        assert observer.frames == 2  # the list on join, then one diff for 20 joins

        for communicator in members[1:11]:
            await communicator.disconnect()
        del members[1:11]
        await hub.flush()
        await read_until(members[0], observer, {f"j{i}" for i in range(10, 20)} | {"observer"})
        assert observer.frames == 3  # one diff for 10 leaves
        assert {m.metadata["name"] for m in await layer.registry.members(GROUP)} == observer.names
    finally:
        await close(layer, members)


async def test_a_member_the_layer_drops_without_a_disconnect_leaves_the_lists(
    settings, redis_url, prefix
):
    """A channel can leave its group without its consumer's disconnect running (an
    abandoned channel, an expired membership): the node's next check tells the room.
    """
    settings.CHAT_PRESENCE_INTERVAL = 0.05
    layer = await use_layer(settings, redis_url, prefix, heartbeat_interval=0.2)
    members: list[WebsocketCommunicator] = []
    try:
        members.append(await connect(ROOM, {"chat_name": "observer"}))
        members.append(await connect(ROOM, {"chat_name": "dropped"}))
        observer = PresenceView()
        await read_until(members[0], observer, {"observer", "dropped"})
        (dropped,) = [m for m in await layer.registry.members(GROUP)
                      if m.metadata["name"] == "dropped"]  # fmt: skip
        await layer.group_discard(GROUP, dropped.channel)  # what the upkeep's sweep does
        await read_until(members[0], observer, {"observer"})
    finally:
        await close(layer, members)


async def test_the_list_on_join_is_bounded_and_counts_every_node(settings, redis_url, prefix):
    layer = await use_layer(settings, redis_url, prefix)
    crowd = BroadcastChannelLayer(hosts=[redis_url], prefix=prefix)  # another node
    try:
        for _ in range(presence.PRESENCE_LIMIT + 5):
            await crowd.group_add(GROUP, await crowd.new_channel())
        communicator = await connect(ROOM, {"chat_name": "Ann"})
        try:
            frame = await communicator.receive_json_from(TIMEOUT)
            assert len(frame["members"]) == presence.PRESENCE_LIMIT
            assert sorted(frame["counts"].values()) == [1, presence.PRESENCE_LIMIT + 5]
            assert frame["total"] == presence.PRESENCE_LIMIT + 6
            # clients see opaque ids, never channel or node names
            ids = {m["id"] for m in frame["members"]} | set(frame["counts"])
            assert not any("!" in i or crowd.node_id in i for i in ids)
        finally:
            await communicator.disconnect()
    finally:
        await crowd.close()
        await close(layer, [])
