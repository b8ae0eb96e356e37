"""The demo chat across two real Daphne processes: messages and broadcasts cross nodes."""

from __future__ import annotations

import asyncio
import http.client
import json
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from broadcast_layer.layer import BroadcastChannelLayer

from .conftest import DaphneFactory, DaphneNode

TIMEOUT = 10.0


def fresh_room() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


def join(node: DaphneNode, room: str) -> connect:
    """Open a chat socket; once the handshake completes the consumer is in the room's group."""
    # proxy=None: a developer's HTTP(S)_PROXY must not reroute loopback traffic.
    return connect(node.ws_url(f"/ws/chat/{room}/"), origin=Origin(node.origin), proxy=None)


async def receive(ws: ClientConnection) -> Any:
    return json.loads(await ws.recv())


def get(node: DaphneNode, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


async def test_message_reaches_members_on_both_nodes(two_nodes: list[DaphneNode]) -> None:
    node_a, node_b = two_nodes
    room = fresh_room()
    async with asyncio.timeout(TIMEOUT), join(node_a, room) as ws_a, join(node_b, room) as ws_b:
        await ws_a.send(json.dumps({"text": "hello from a"}))
        expected = {"type": "message", "text": "hello from a", "node": "node-a"}
        assert await receive(ws_b) == expected
        assert await receive(ws_a) == expected

        await ws_b.send(json.dumps({"text": "hello from b"}))
        expected = {"type": "message", "text": "hello from b", "node": "node-b"}
        assert await receive(ws_a) == expected
        assert await receive(ws_b) == expected


async def test_announcement_from_outside_reaches_both_nodes(
    two_nodes: list[DaphneNode], redis_url: str
) -> None:
    node_a, node_b = two_nodes
    room = fresh_room()
    layer = BroadcastChannelLayer(hosts=[redis_url])  # the demo's default prefix, "asgi"
    try:
        async with (
            asyncio.timeout(TIMEOUT),
            join(node_a, room) as ws_a,
            join(node_b, room) as ws_b,
        ):
            reached = await layer.group_send(
                f"chat.{room}", {"type": "broadcast.announcement", "text": "hi"}
            )
            assert reached == 2  # one subscribed node per Daphne process
            assert await receive(ws_a) == {"type": "announcement", "text": "hi"}
            assert await receive(ws_b) == {"type": "announcement", "text": "hi"}
    finally:
        await layer.close()


async def test_bad_input_is_ignored_and_long_text_truncated(two_nodes: list[DaphneNode]) -> None:
    node_a, node_b = two_nodes
    room = fresh_room()
    async with asyncio.timeout(TIMEOUT), join(node_a, room) as ws_a, join(node_b, room) as ws_b:
        for bad in ["not json", "[1, 2]", '{"text": 5}', '{"text": "   "}', "{}"]:
            await ws_a.send(bad)
        await ws_a.send(b"binary frames are not part of the protocol")
        await ws_a.send(json.dumps({"text": "x" * 3000}))
        # Messages arrive in order, so the first thing B sees proves the rest were dropped.
        assert await receive(ws_b) == {"type": "message", "text": "x" * 2000, "node": "node-a"}


async def test_invalid_room_name_is_rejected(two_nodes: list[DaphneNode]) -> None:
    node_a, _ = two_nodes
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(InvalidStatus) as excinfo:
            async with join(node_a, "a" * 81):
                pass
    assert excinfo.value.response.status_code == 403


def test_pages_render(daphne: DaphneFactory) -> None:
    (node,) = daphne("node-a")
    status, body = get(node, "/")
    assert status == 200
    assert "Chat rooms" in body
    assert get(node, "/?room=lobby")[0] == 302
    status, body = get(node, "/room/lobby/")
    assert status == 200
    assert 'id="room-name"' in body
    assert get(node, "/room/" + "a" * 81 + "/")[0] == 404
