"""The demo's safe practices, against its own consumer and worker on the real layer.

Rooms live in the ``chat.`` namespace, internal groups can be neither joined nor listed,
chat lines and presence requests are rate-limited, long lines are refused, display
names are cleaned, ``/roll`` never crashes the worker, and DEBUG is off by default.
"""

from __future__ import annotations

import asyncio
import json
import runpy
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from django.test import RequestFactory

from broadcast_layer.layer import BroadcastChannelLayer
from demo_chat.chat import consumers, presence, views
from demo_chat.chat.management.commands import chat_worker
from demo_chat.chat.rooms import clean_display_name, group_name, room_of_group
from demo_chat.chat.routing import websocket_urlpatterns
from demo_chat.chat.worker import COMMANDS_CHANNEL, ROLL_USAGE, CommandWorker, parse_sides

from . import faults
from .conftest import eventually, nothing_arrives, within

TIMEOUT = 10
#: The demo's own history and durable channels (demo_chat/settings.py).
DEMO_CONFIG = {
    "history": {"chatlog.*": {"size": 100, "ttl": 86400}},
    "durable_channels": {"chat-commands": {"claim_after": 5}},
}


@pytest.fixture
async def layer(settings, redis_url, prefix) -> AsyncIterator[BroadcastChannelLayer]:
    """The layer the demo's consumer and worker get, on the test Redis and prefix."""
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
        "CONFIG": {"hosts": [redis_url], "prefix": prefix, **DEMO_CONFIG},
    }}  # fmt: skip
    channel_layer = get_channel_layer()
    yield channel_layer
    await presence.hub(channel_layer).aclose()  # its pending diffs, before the layer closes
    await channel_layer.close()


def chat_app(session: dict[str, Any] | None = None) -> Callable[..., Awaitable[None]]:
    router = URLRouter(websocket_urlpatterns)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await router({**scope, "session": session or {}}, receive, send)

    return app


async def connect(room: str, session: dict[str, Any] | None = None) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(chat_app(session), f"/ws/chat/{room}/")
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def outputs_until_closed(communicator: WebsocketCommunicator) -> tuple[list[Any], int]:
    """Every JSON frame the consumer sent, and the close code it ended with."""
    frames = []
    async with asyncio.timeout(TIMEOUT * 3):
        while True:
            output = await communicator.receive_output(timeout=TIMEOUT)
            if output["type"] == "websocket.close":
                return frames, output.get("code", 1000)
            frames.append(json.loads(output["text"]))


# -- rooms are a namespace ----------------------------------------------------------------


def test_a_room_is_a_chat_group_and_nothing_else():
    assert group_name("lobby") == "chat.lobby"
    for name in ["broadcast.all", "user.1", "", "a" * 81, "lobby\n", "lob by", "chat.x"]:
        with pytest.raises(ValueError, match="Invalid room name"):
            group_name(name)
    assert room_of_group("chat.lobby") == "lobby"
    for group in ["broadcast.all", "user.1", "lobby", "chat.", "chat.bad.name"]:
        assert room_of_group(group) is None


@pytest.mark.parametrize("room", ["broadcast.all", "user.1", "chat.lobby"])
async def test_internal_groups_cannot_be_joined_from_a_websocket(layer, room):
    communicator = WebsocketCommunicator(chat_app(), f"/ws/chat/{room}/")
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert not connected  # refused before accept(): a 403 to the browser
    assert (await layer.registry.rooms()).rooms == ()


async def test_chat_lines_go_to_the_room_only(layer):
    spies = {}
    for group in ["broadcast.all", "user.1", "lobby", "chat.lobby", "chatlog.lobby"]:
        spies[group] = await layer.new_channel()
        await layer.group_add(group, spies[group])
    communicator = await connect("lobby")
    try:
        (member,) = [m for m in await layer.registry.members("chat.lobby")
                     if m.channel != spies["chat.lobby"]]  # fmt: skip
        # The mixin puts every socket in the "everyone" group, never in a user's group;
        # the room's lines have a group of their own, which keeps them (history).
        expected = {"chat.lobby", "chatlog.lobby", "broadcast.all"}

        async def in_expected_groups() -> bool:  # chatlog is joined right after the handshake
            return set(await layer.registry.groups_of(member.channel)) == expected

        await eventually(in_expected_groups)
        await communicator.send_json_to({"text": "hello everyone"})
        message = await within(layer.receive(spies["chatlog.lobby"]))
        assert message["type"] == "chat.message"
        assert message["text"] == "hello everyone"
        for group in ["broadcast.all", "user.1", "lobby"]:
            await nothing_arrives(layer, spies[group])
    finally:
        await communicator.disconnect()


async def test_the_room_list_shows_chat_rooms_only(layer):
    for group in ["broadcast.all", "user.1", "lobby", "chat.lobby", "chat.bad.name"]:
        await layer.group_add(group, await layer.new_channel())
    response = await asyncio.to_thread(views.rooms_json, RequestFactory().get("/rooms.json"))
    assert json.loads(response.content) == {"rooms": [{"name": "lobby", "size": 1, "nodes": 1}]}


# -- rate limits and sizes ----------------------------------------------------------------


async def test_a_presence_flood_is_answered_a_few_times_then_closed(layer):
    communicator = await connect("lobby")
    for _ in range(200):
        await communicator.send_json_to({"type": "presence"})
    frames, code = await outputs_until_closed(communicator)
    presence = [f for f in frames if f["type"] == "presence"]
    errors = [f for f in frames if f["type"] == "error"]
    # the join's own update, the burst, and what refilled while the flood was read
    assert len(presence) < 20
    assert errors[0]["text"] == "Slow down: too many requests."
    assert code == consumers.POLICY_VIOLATION
    assert len(frames) < 60  # the flood was not answered frame for frame


async def test_a_chat_flood_reaches_the_room_a_few_times_then_is_closed(layer):
    spy = await layer.new_channel()
    await layer.group_add("chat.lobby", spy)
    communicator = await connect("lobby")
    for n in range(200):
        await communicator.send_json_to({"text": f"flood {n}"})
    frames, code = await outputs_until_closed(communicator)
    relayed = [f for f in frames if f["type"] == "message"]
    assert 1 <= len(relayed) < 20
    assert any(f == {"type": "error", "text": "Slow down: too many messages."} for f in frames)
    assert code == consumers.POLICY_VIOLATION


async def test_a_long_line_is_refused_with_a_polite_error(layer):
    communicator = await connect("lobby")
    try:
        assert (await communicator.receive_json_from(TIMEOUT))["type"] == "presence"
        # then the room's last lines (none yet) and the history recovery's report
        assert (await communicator.receive_json_from(TIMEOUT))["type"] == "history.recovered"
        await communicator.send_json_to({"text": "x" * 2001})
        assert await communicator.receive_json_from(TIMEOUT) == {
            "type": "error", "text": "Messages are limited to 2000 characters."
        }  # fmt: skip
        await communicator.send_to(text_data="x" * (consumers.MAX_FRAME_LENGTH + 1))
        assert (await communicator.receive_json_from(TIMEOUT))["type"] == "error"
        await communicator.send_json_to({"text": "x" * 2000})
        message = await communicator.receive_json_from(TIMEOUT)
        assert (message["type"], len(message["text"])) == ("message", 2000)
    finally:
        await communicator.disconnect()


async def test_a_presence_list_is_bounded_whatever_the_room_size(layer, make_layer):
    crowd = make_layer()  # another node, holding the rest of the room
    for _ in range(consumers.PRESENCE_LIMIT + 5):
        await crowd.group_add("chat.big", await crowd.new_channel())
    communicator = await connect("big")
    try:
        presence = await communicator.receive_json_from(TIMEOUT)
        assert len(presence["members"]) == consumers.PRESENCE_LIMIT
        assert presence["total"] == consumers.PRESENCE_LIMIT + 6
    finally:
        await communicator.disconnect()


# -- display names ------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "shown"), [
    ("Ann\u200b", "Ann"),  # zero-width space
    ("A\u200dnn", "Ann"),  # zero-width joiner
    ("\u202eAnn", "Ann"),  # right-to-left override
    ("\uff21\uff4e\uff4e", "Ann"),  # full-width letters (NFKC)
    ("\ufb01ona", "fiona"),  # a ligature (NFKC)
    ("Ann\x00\x07\x1b[31m", "Ann[31m"),  # control characters
    ("  Ann \t\n Lee\u2028 ", "Ann Lee"),  # whitespace collapsed, line separator too
    ("Ann \u200b Lee", "Ann Lee"),
    ("\ud800An\ue000n\u0378", "Ann"),  # surrogate, private use, unassigned
    ("e\u200d\u0301", "\u00e9"),  # stripping a joiner lets NFKC compose
    ("x" * 100, "x" * 40),
    ("\u200b\u200c\ufeff", None),
    (42, None),
])  # fmt: skip
def test_display_names_are_cleaned(raw, shown):
    assert clean_display_name(raw) == shown
    if shown is not None:
        assert clean_display_name(shown) == shown


async def test_the_consumer_shows_the_cleaned_name(layer):
    communicator = await connect("lobby", session={"chat_name": "\u202eAnn\u200b\u200b"})
    try:
        presence = await communicator.receive_json_from(TIMEOUT)
        assert [person["name"] for person in presence["members"]] == ["Ann"]
        (member,) = await layer.registry.members("chat.lobby")
        assert member.metadata["name"] == "Ann"
    finally:
        await communicator.disconnect()


# -- the worker ---------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "sides"), [
    ("", 6), ("20", 20), (" 20 ", 20), ("2", 2), ("1000", 1000),
    ("\u00b2", None), ("\u0663", None), ("99999999999999999999", None), ("-1", None),
    ("abc", None), ("1", None), ("1001", None), ("1e3", None), ("0x10", None), ("20 20", None),
])  # fmt: skip
def test_roll_sides(args, sides):
    assert parse_sides(args) == sides


async def test_the_worker_answers_bad_commands_politely_and_keeps_working(layer, caplog):
    worker = ApplicationCommunicator(CommandWorker.as_asgi(),
                                     {"type": "channel", "channel": "chat-commands"})  # fmt: skip
    reply, member = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("chat.lobby", member)  # /who lists the room's members
    await layer.group_add("chatlog.lobby", member)  # where the room's lines go
    event = {"type": "chat.command", "command": "/roll", "room": "lobby", "name": "Ann",
             "reply_channel": reply}  # fmt: skip
    try:
        for args in ["\u00b2", "99999999999999999999", "-1", "abc"]:
            await worker.send_input({**event, "args": args})
            assert await within(layer.receive(reply)) == {"type": "chat.private",
                                                          "text": ROLL_USAGE}  # fmt: skip
        # malformed events (not from our consumer) are ignored, not crashed on
        for bad in [{"args": 5}, {"room": "broadcast.all"}, {"reply_channel": None}]:
            await worker.send_input({**event, "args": "", **bad})
        await worker.send_input({**event, "command": "/who", "args": ""})
        assert (await within(layer.receive(reply)))["text"] == "In lobby: ?"
        await worker.send_input({**event, "args": "20"})
        rolled = await within(layer.receive(member))
        assert rolled["text"].startswith("Ann rolled ")
        assert rolled["text"].endswith(" (1-20)")
        assert not worker.future.done()  # still running
        await nothing_arrives(layer, reply)
    finally:
        worker.future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker.future
    assert all(record.exc_info is None for record in caplog.records)


# -- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "debug"), [(None, False), ("1", True), ("0", False),
                                              ("true", False), ("", False)])  # fmt: skip
def test_debug_is_on_only_with_django_debug_1(monkeypatch, value, debug):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "tests-only")
    if value is None:
        monkeypatch.delenv("DJANGO_DEBUG", raising=False)
    else:
        monkeypatch.setenv("DJANGO_DEBUG", value)
    assert runpy.run_module("demo_chat.settings")["DEBUG"] is debug


def test_websocket_origins_are_exact_host_port_pairs(monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "tests-only")
    monkeypatch.delenv("DEMO_ALLOWED_ORIGINS", raising=False)
    monkeypatch.setenv("DEMO_PORTS", "9001,9002")
    origins = runpy.run_module("demo_chat.settings")["CHAT_ALLOWED_ORIGINS"]
    assert "http://127.0.0.1:9001" in origins
    assert "http://localhost:9002" in origins
    assert all(origin.rsplit(":", 1)[1] in {"9001", "9002"} for origin in origins)


@pytest.mark.slow
async def test_a_roll_taken_by_a_killed_worker_is_answered_by_the_next(layer, node_processes):
    """`kill -9` a worker holding a /roll: the demo's chat_worker answers it after
    claim_after (5 s), because chat-commands is a durable channel."""
    durable = json.dumps(DEMO_CONFIG["durable_channels"])
    doomed = await asyncio.to_thread(node_processes, env={"DURABLE_CHANNELS": durable})
    member = await layer.new_channel()
    await layer.group_add("chatlog.lobby", member)
    await layer.send(COMMANDS_CHANNEL, {"type": "chat.command", "command": "/roll", "args": "",
                                        "room": "lobby", "name": "Ann",
                                        "reply_channel": member})  # fmt: skip
    taken = await asyncio.to_thread(doomed.ask, op="receive", channel=COMMANDS_CHANNEL)
    assert taken["message"]["command"] == "/roll"
    faults.sigkill(doomed.process)  # dies before answering
    stop = asyncio.Event()
    worker = asyncio.create_task(chat_worker.serve(stop))
    try:
        rolled = await within(layer.receive(member), seconds=30)
        assert rolled["text"].startswith("Ann rolled ")
    finally:
        stop.set()
        await within(worker)
