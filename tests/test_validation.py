"""One set of input rules: names, message types and nesting, the same at every entry point."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.layers import BaseChannelLayer
from hypothesis import given
from hypothesis import strategies as st

from broadcast_layer._protocol.validation import (
    MAX_NAME_LENGTH,
    MAX_NESTING,
    NAME_CHARACTERS,
    loads_object,
    require_valid_channel_name,
    require_valid_group_name,
    require_valid_message_type,
)
from broadcast_layer.emitter import AsyncEmitter, Emitter
from broadcast_layer.exceptions import (
    InvalidMessage,
    InvalidMessageType,
    InvalidName,
    MessageTooDeep,
    MessageTooLarge,
)
from broadcast_layer.layer import BroadcastChannelLayer

from .conftest import nothing_arrives, within

BAD_NAMES = [
    "room\n",
    "room\r\n",
    "room٣",
    "\uff32\uff2f\uff2f\uff2d",
    "a" * MAX_NAME_LENGTH,
    "",
    "bad name",
    7,
]


def nest(depth: int) -> dict[str, Any]:
    """``{"type": "deep", "x": [[...]]}``: the message plus ``depth - 1`` nested lists."""
    value: Any = 0
    for _ in range(depth - 1):
        value = [value]
    return {"type": "deep", "x": value}


# -- names --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_rules_refuse_trailing_newlines_non_ascii_and_long_names(name):
    with pytest.raises(InvalidName) as caught:
        require_valid_group_name(name)
    assert isinstance(caught.value, TypeError)  # what Channels' layers raise
    with pytest.raises(InvalidName):
        require_valid_channel_name(name)
    with pytest.raises(InvalidName):
        require_valid_channel_name(f"{name}!abc" if isinstance(name, str) else name)


def test_channels_own_check_is_what_lets_a_trailing_newline_through():
    # The reason for the override: Channels matches with "$", which matches before "\n".
    assert BaseChannelLayer().require_valid_group_name("room\n")
    with pytest.raises(InvalidName):
        BroadcastChannelLayer().require_valid_group_name("room\n")


async def test_room_newline_is_refused_by_every_layer_call_and_nothing_is_written(layer):
    channel = await layer.new_channel()
    calls = [
        lambda: layer.send("room\n", {"type": "m"}),
        lambda: layer.send(channel + "\n", {"type": "m"}),
        lambda: layer.group_add("room\n", channel),
        lambda: layer.group_add("room", channel + "\n"),
        lambda: layer.group_discard("room\n", channel),
        lambda: layer.group_send("room\n", {"type": "m"}),
        lambda: layer.new_channel("specific\n"),
        lambda: layer.receive("room\n"),
        lambda: layer.set_channel_metadata(channel + "\n", {}),
        lambda: layer.disconnect(channel + "\n"),
        lambda: layer.registry.room_size("room\n"),
        lambda: layer.registry.room("room\n"),
        lambda: layer.registry.members("room\n"),
        lambda: layer.registry.members_per_node("room\n"),
        lambda: layer.registry.channel(channel + "\n"),
    ]
    for call in calls:
        with pytest.raises(InvalidName):
            await call()
    assert (await layer.registry.rooms()).total == 0
    assert set((await layer.registry.channel(channel)).groups) == set()


async def test_room_newline_is_refused_by_the_emitters_and_the_sync_registry(
    layer, settings, redis_url, prefix
):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        }
    }
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    emitter = Emitter()
    try:
        for call in (
            lambda: emitter.group("room\n", {"type": "m"}),
            lambda: emitter.groups(["room", "room\n"], {"type": "m"}),
            lambda: emitter.channel(channel + "\n", {"type": "m"}),
            lambda: emitter.layer.sync_registry.members("room\n"),
        ):
            with pytest.raises(InvalidName):
                await asyncio.to_thread(call)
        with pytest.raises(InvalidName):
            await AsyncEmitter().group("room\n", {"type": "m"})
    finally:
        emitter.close()
    await nothing_arrives(layer, channel)


@given(st.text(max_size=120))
def test_every_name_the_rules_accept_channels_accepts_too(name):
    try:
        require_valid_group_name(name)
    except InvalidName:
        return
    assert set(name) <= NAME_CHARACTERS
    assert len(name) < MAX_NAME_LENGTH
    assert BaseChannelLayer().require_valid_group_name(name)  # never looser than Channels


@given(st.text(alphabet=sorted(NAME_CHARACTERS), min_size=1, max_size=MAX_NAME_LENGTH - 1))
def test_every_name_of_the_charset_under_the_limit_is_accepted(name):
    assert require_valid_group_name(name) == name
    assert require_valid_channel_name(name) == name


# -- message types ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["chat.message", "a", "chat.Message_2.x", "broadcast.disconnect"])
def test_handler_names_are_valid_types(value):
    assert require_valid_message_type(value) == value


@pytest.mark.parametrize(
    "value",
    ["bad!type", "_private", "2fa", "chat..message", "chat.", ".chat", "chat message",
     "chat.message\n", "", "x" * 101, 7, None, "chat-message", "café"],
)  # fmt: skip
def test_types_that_name_no_handler_are_refused(value):
    with pytest.raises(InvalidMessageType) as caught:
        require_valid_message_type(value)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", ["websocket.receive", "http.request", "lifespan.startup"])
def test_protocol_types_need_an_explicit_allowance(value):
    with pytest.raises(InvalidMessageType, match="protocol type"):
        require_valid_message_type(value)
    assert require_valid_message_type(value, allow_protocol=True) == value
    assert require_valid_message_type(value.replace(".", "_x.")) == value.replace(".", "_x.")


@given(st.text(max_size=40))
def test_every_accepted_type_calls_a_handler_channels_would_look_up(value):
    try:
        require_valid_message_type(value)
    except InvalidMessageType:
        return
    handler = value.replace(".", "_")  # what Channels' get_handler_name does
    assert handler.isidentifier()
    assert handler.isascii()
    assert not handler.startswith("_")
    assert value.partition(".")[0] not in ("websocket", "http", "lifespan")


# -- nesting and message shapes ----------------------------------------------------------


@pytest.mark.parametrize("serializer_format", ["msgpack", "json"])
def test_nesting_is_limited_with_a_clear_error(serializer_format):
    layer = BroadcastChannelLayer(serializer_format=serializer_format)
    assert layer.encode(nest(MAX_NESTING))
    for depth in (MAX_NESTING + 1, 600, 100_000):  # past msgpack's and Python's own limits
        with pytest.raises(MessageTooDeep) as caught:
            layer.encode(nest(depth))
        assert isinstance(caught.value, TypeError)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(MessageTooDeep):
        layer.encode({"type": "m", "loop": loop})
    with pytest.raises(MessageTooDeep):
        layer.encode({"type": "m", "k": {nest_tuple(MAX_NESTING + 1): 1}})


def nest_tuple(depth: int) -> tuple[Any, ...]:
    value: tuple[Any, ...] = ()
    for _ in range(depth - 1):
        value = (value,)
    return value


async def test_a_deep_message_is_refused_and_other_traffic_flows(nodes):
    receiver, sender = nodes[0], nodes[1]
    channel = await receiver.new_channel()
    await receiver.group_add("room", channel)
    for send in (sender.group_send, sender.send):
        target = "room" if send == sender.group_send else channel
        with pytest.raises(MessageTooDeep):
            await send(target, nest(10_000))
    await sender.group_send("room", {"type": "fine"})
    assert await within(receiver.receive(channel)) == {"type": "fine"}
    await nothing_arrives(receiver, channel)


async def test_deep_metadata_is_refused_before_json_recurses(layer):
    channel = await layer.new_channel()
    with pytest.raises(MessageTooDeep):
        await layer.set_channel_metadata(channel, nest(100_000))
    assert await layer.set_channel_metadata(channel, nest(MAX_NESTING)) is True


def test_json_bodies_deeper_than_python_can_parse_are_too_deep():
    with pytest.raises(MessageTooDeep):
        loads_object("[" * 100_000 + "]" * 100_000)
    with pytest.raises(MessageTooDeep):
        loads_object('{"a": ' + "[" * 40 + "]" * 40 + "}")
    assert loads_object('{"a": ' + "[" * 30 + "]" * 30 + "}")["a"]


msgpack_ints = st.integers(-(2**63), 2**64 - 1)  # wider ints: InvalidMessage (OverflowError)
json_values = st.recursive(
    st.none() | st.booleans() | msgpack_ints | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                      children, max_size=3),
    max_leaves=60,
)  # fmt: skip


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


@given(
    body=json_values,
    wrap=st.integers(0, 40),
    message_type=st.one_of(st.text(max_size=15), msgpack_ints, st.none()),
)
def test_any_message_encodes_or_fails_with_a_documented_error(body, wrap, message_type):
    layer = BroadcastChannelLayer(max_message_size=2000)
    for _ in range(wrap):
        body = [body]
    message = {"type": message_type, "body": body}
    try:
        data = layer.encode(message)
    except MessageTooDeep:
        assert depth_of(message) > MAX_NESTING
    except MessageTooLarge:
        assert depth_of(message) <= MAX_NESTING
    except InvalidMessage:
        raise AssertionError("JSON values with 64-bit ints are serializable") from None
    else:
        assert depth_of(message) <= MAX_NESTING
        assert len(data) <= 2000
    encoded = json.dumps(message)
    try:
        assert loads_object(encoded) == message
    except MessageTooDeep:
        assert depth_of(message) > MAX_NESTING
