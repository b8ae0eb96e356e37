"""A consumer whose handler raised leaves its room: a real Daphne process and WebSocket.

When a handler raises, Channels stops calling ``receive`` on the consumer's channel
without cancelling anything; the node's sweep abandons the channel once it has had
no receive for longer than ``expiry`` (plus at most one upkeep tick).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from broadcast_layer.layer import BroadcastChannelLayer

from ..conftest import eventually
from .conftest import DaphneFactory, DaphneNode

EXPIRY = 2.0  # the Daphne node's; its upkeep tick is min(heartbeat_interval=5, expiry)
TIMEOUT = 30.0  # generous: the bound is EXPIRY + one tick (4 s), the machine is shared


def join(node: DaphneNode, room: str) -> connect:
    return connect(node.ws_url(f"/ws/crash/{room}/"), proxy=None)


async def channel_of(ws: ClientConnection) -> str:
    joined = json.loads(await ws.recv())
    assert joined["type"] == "joined"
    return str(joined["channel"])


@pytest.mark.slow
async def test_a_consumer_whose_handler_raised_leaves_its_room(
    daphne: DaphneFactory, redis_url: str, prefix: str
) -> None:
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "BROADCAST_TEST_PREFIX": prefix,
           "BROADCAST_TEST_EXPIRY": str(EXPIRY)}  # fmt: skip
    (node,) = daphne("crashy", env=env, app="tests.asgi:application")
    room = f"crash-{uuid.uuid4().hex[:8]}"
    layer = BroadcastChannelLayer(hosts=[redis_url], prefix=prefix)
    try:
        async with asyncio.timeout(TIMEOUT), join(node, room) as doomed, join(node, room) as ok:
            crashed, survivor = await channel_of(doomed), await channel_of(ok)
            assert await layer.registry.room_size(room) == 2

            await doomed.send(json.dumps({"op": "crash"}))
            with pytest.raises(ConnectionClosed) as closed:
                await doomed.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1011  # Daphne's answer to a handler's exception
            crashed_at = time.monotonic()

            async def left_the_room() -> bool:
                members = {member.channel for member in await layer.registry.members(room)}
                return members == {survivor}

            await eventually(left_the_room, TIMEOUT)
            print(f"left the room {time.monotonic() - crashed_at:.1f} s after the crash")
            assert await layer.registry.room_size(room) == 1
            assert await layer.registry.channel(crashed) is None
            # The surviving member, waiting in receive all along, still gets the room's messages.
            message = {"type": "room.message", "text": "still here"}
            await layer.group_send(room, message)
            assert json.loads(await ok.recv()) == message
    finally:
        await layer.close()
    assert "a bug in a handler" in node.output()
