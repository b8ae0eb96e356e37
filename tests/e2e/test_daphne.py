"""The demo chat across two real Daphne processes: messages and broadcasts cross nodes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from asyncio.subprocess import PIPE
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from broadcast_layer.layer import BroadcastChannelLayer

from ..conftest import eventually
from .conftest import REPO_ROOT, DaphneFactory, DaphneNode, http_get

TIMEOUT = 10.0


def fresh_room() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


def join(node: DaphneNode, room: str, **options: Any) -> connect:
    """Open a chat socket; once the handshake completes the consumer is in the room's group.
    ``options`` go to websockets' ``connect``."""
    # proxy=None: a developer's HTTP(S)_PROXY must not reroute loopback traffic.
    url = node.ws_url(f"/ws/chat/{room}/")
    return connect(url, origin=Origin(node.origin), proxy=None, **options)


async def receive(ws: ClientConnection) -> Any:
    """The next message, skipping presence updates (the list, then diffs of joins and leaves)
    and the history recovery's report, without a line's offset and epoch."""
    while str((data := json.loads(await ws.recv())).get("type")).startswith(
        ("presence", "history.")
    ):
        pass
    for key in ("name", "offset", "epoch"):  # a random guest name; the line's position
        data.pop(key, None)
    return data


async def until_closed(ws: ClientConnection) -> ConnectionClosed:
    """Read (presence updates may come first) until the server closes the socket."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed


def get(node: DaphneNode, path: str) -> tuple[int, str]:
    return http_get(node.port, path, TIMEOUT)


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


async def test_manage_py_broadcast_reaches_both_nodes_as_an_announcement(
    two_nodes: list[DaphneNode], redis_url: str
) -> None:
    node_a, node_b = two_nodes
    room = fresh_room()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo_chat.settings", "REDIS_URL": redis_url,
           "DJANGO_SECRET_KEY": "e2e-tests-only"}  # fmt: skip
    async with asyncio.timeout(TIMEOUT), join(node_a, room) as ws_a, join(node_b, room) as ws_b:
        command = await asyncio.create_subprocess_exec(  # a room is the group chat.<room>
            sys.executable, "manage.py", "broadcast", f"chat.{room}", "maintenance in 5 minutes",
            cwd=REPO_ROOT, env=env, stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        out, err = await command.communicate()
        assert command.returncode == 0, err.decode()
        assert out.decode().strip() == f"chat.{room}: published to 2 nodes, 2 members"
        expected = {"type": "announcement", "text": "maintenance in 5 minutes"}
        assert await receive(ws_a) == expected
        assert await receive(ws_b) == expected


async def test_disconnect_from_another_process_closes_the_socket(
    two_nodes: list[DaphneNode], redis_url: str
) -> None:
    node_a, node_b = two_nodes
    room = fresh_room()
    layer = BroadcastChannelLayer(hosts=[redis_url])  # the demo's default prefix, "asgi"
    try:
        async with asyncio.timeout(TIMEOUT), join(node_a, room) as ws_a, join(node_b, room):
            members = await layer.registry.members(f"chat.{room}")
            assert {m.metadata["node"] for m in members} == {"node-a", "node-b"}
            target = next(m.channel for m in members if m.metadata["node"] == "node-a")
            assert await layer.disconnect(target) is True
            closed = await until_closed(ws_a)
            assert closed.rcvd is not None
            assert closed.rcvd.code == 4000

            async def left_its_groups() -> bool:
                remaining = await layer.registry.members(f"chat.{room}")
                return len(remaining) == 1 and remaining[0].channel != target

            await eventually(left_its_groups)
    finally:
        await layer.close()


async def test_bad_input_is_ignored_and_long_text_refused(two_nodes: list[DaphneNode]) -> None:
    node_a, node_b = two_nodes
    room = fresh_room()
    async with asyncio.timeout(TIMEOUT), join(node_a, room) as ws_a, join(node_b, room) as ws_b:
        for bad in ["not json", "[1, 2]", '{"text": 5}', '{"text": "   "}', "{}"]:
            await ws_a.send(bad)
        await ws_a.send(b"binary frames are not part of the protocol")
        await ws_a.send(json.dumps({"text": "x" * 2001}))
        assert await receive(ws_a) == {
            "type": "error",
            "text": "Messages are limited to 2000 characters.",
        }
        await ws_a.send(json.dumps({"text": "x" * 2000}))
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


async def test_a_flooding_connection_is_rate_limited(two_nodes: list[DaphneNode]) -> None:
    node_a, _ = two_nodes
    # max_queue=None: the test reads 11 of about 30 replies. With websockets' default of
    # 16 the unread ones pause its reading, and close() then waits close_timeout (10 s,
    # this test's whole timeout) for the server's close frame it does not read.
    async with asyncio.timeout(TIMEOUT), join(node_a, fresh_room(), max_queue=None) as ws:
        for n in range(30):
            await ws.send(json.dumps({"text": f"flood {n}"}))
        received = [await receive(ws) for _ in range(11)]
        relayed = [m for m in received if m["type"] == "message"]
        errors = [m for m in received if m["type"] == "error"]
        assert len(relayed) <= 10  # the burst allowance
        assert errors
        assert errors[0]["text"].startswith("Slow down")


async def test_a_websocket_from_another_origin_is_refused(daphne: DaphneFactory) -> None:
    (node,) = daphne("node-a")
    url = node.ws_url(f"/ws/chat/{fresh_room()}/")
    for origin in [
        "http://evil.example",
        "http://127.0.0.1:1",  # the right host on another port: another site on this machine
        f"https://127.0.0.1:{node.port}",  # the right port on another scheme
        f"http://localhost:{node.port}",  # not in this node's list
    ]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin=Origin(origin), proxy=None):
                pass
        assert refused.value.response.status_code == 403, origin
    async with connect(url, origin=Origin(node.origin), proxy=None):
        pass  # its own origin is accepted
