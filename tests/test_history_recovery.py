"""HistoryRecoveryMixin: a reconnecting client gets what it missed, once, then live messages.

The tests marked ``on_both`` run on the session's redis-server and on its local cluster.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from broadcast_layer import BroadcastChannelLayer, HistoryRecoveryMixin

from . import faults
from .conftest import on_both

TIMEOUT = 10
HISTORY = {"chat.*": {"size": 50, "ttl": 3600}}


class RoomConsumer(HistoryRecoveryMixin, AsyncWebsocketConsumer):
    history_on_join = 3

    def history_groups(self) -> list[str]:
        return ["chat.room"]

    async def connect(self) -> None:
        await self.accept()

    async def chat_line(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(event))


@pytest.fixture
async def layer(settings, deployment, prefix) -> AsyncIterator[BroadcastChannelLayer]:
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
        "CONFIG": {**deployment.config, "prefix": prefix, "history": HISTORY},
    }}  # fmt: skip
    channel_layer = get_channel_layer()
    yield channel_layer
    await channel_layer.close()


async def connect(query: str = "") -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(RoomConsumer.as_asgi(), f"/ws/?{query}")
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def frames_until_recovered(communicator: WebsocketCommunicator) -> tuple[list[int], dict]:
    """The offsets of the lines replayed before the ``history.recovered`` frame, and it."""
    offsets = []
    while True:
        frame = json.loads(await communicator.receive_from(timeout=TIMEOUT))
        if frame["type"] == "history.recovered":
            return offsets, frame
        offsets.append(frame["history"]["offset"])


async def send_lines(layer: BroadcastChannelLayer, first: int, last: int) -> None:
    for n in range(first, last + 1):
        await layer.group_send("chat.room", {"type": "chat.line", "n": n})


async def test_a_new_client_sees_the_latest_lines_then_live_ones(layer):
    await send_lines(layer, 1, 5)
    client = await connect()
    offsets, recovered = await frames_until_recovered(client)
    assert offsets == [3, 4, 5]
    assert recovered["complete"]
    assert recovered["offset"] == 5
    await send_lines(layer, 6, 6)
    assert json.loads(await client.receive_from(timeout=TIMEOUT))["history"]["offset"] == 6
    await client.disconnect()


@on_both
async def test_a_reconnecting_client_recovers_exactly_what_it_missed(layer):
    await send_lines(layer, 1, 2)
    first = await connect()
    _, recovered = await frames_until_recovered(first)
    epoch = recovered["epoch"]
    await first.disconnect()
    await send_lines(layer, 3, 7)  # missed while away
    client = await connect(f"offset=2&epoch={epoch}")
    offsets, recovered = await frames_until_recovered(client)
    assert offsets == [3, 4, 5, 6, 7]
    assert recovered == {"type": "history.recovered", "group": "chat.room", "complete": True,
                         "epoch": epoch, "offset": 7}  # fmt: skip
    await send_lines(layer, 8, 9)
    live = [json.loads(await client.receive_from(timeout=TIMEOUT)) for _ in range(2)]
    assert [frame["history"]["offset"] for frame in live] == [8, 9]
    assert await client.receive_nothing(timeout=0.2)
    await client.disconnect()


@on_both
async def test_a_live_copy_of_a_replayed_line_is_dropped(layer):
    """A line sent between the join and the read is both replayed and in the mailbox:
    the consumer dispatches each offset once."""
    await send_lines(layer, 1, 3)
    page = await layer.group_history("chat.room")
    client = await connect(f"offset=1&epoch={page.epoch}")
    offsets, recovered = await frames_until_recovered(client)
    assert offsets == [2, 3]
    assert recovered["complete"]
    (member,) = await layer.registry.members("chat.room")
    for offset in (3, 4):  # 3 as a late live copy, then a new one
        stamp = {"offset": offset, "epoch": page.epoch}
        await layer.send(member.channel, {"type": "chat.line", "history": stamp})
    assert json.loads(await client.receive_from(timeout=TIMEOUT))["history"]["offset"] == 4
    assert await client.receive_nothing(timeout=0.2)
    await client.disconnect()


@on_both
async def test_a_client_too_far_behind_or_from_a_lost_history_is_told(layer, deployment):
    await send_lines(layer, 1, 300)  # size 50: the early ones are trimmed
    page = await layer.group_history("chat.room")
    client = await connect(f"offset=1&epoch={page.epoch}")
    _, recovered = await frames_until_recovered(client)
    assert recovered["complete"] is False
    await client.disconnect()
    for url in deployment.masters():  # the history is lost: a new epoch
        faults.flushall(url)
    await send_lines(layer, 1, 1)
    client = await connect(f"offset=300&epoch={page.epoch}")
    offsets, recovered = await frames_until_recovered(client)
    assert recovered["complete"] is False
    assert recovered["epoch"] != page.epoch
    assert offsets == [1]
    await client.disconnect()


async def test_a_recover_frame_replays_after_the_connection(layer):
    client = await connect()
    _, recovered = await frames_until_recovered(client)
    await send_lines(layer, 1, 2)
    live = [json.loads(await client.receive_from(timeout=TIMEOUT)) for _ in range(2)]
    assert [frame["history"]["offset"] for frame in live] == [1, 2]
    frame = {"type": "history.recover", "group": "chat.room", "offset": 0,
             "epoch": recovered["epoch"]}  # fmt: skip
    await client.send_to(text_data=json.dumps(frame))
    offsets, again = await frames_until_recovered(client)
    assert offsets == []  # offsets 1 and 2 were dispatched already: not twice
    assert again["complete"]
    await client.disconnect()
