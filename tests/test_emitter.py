"""The emitter: sending from outside a consumer, synchronously and asynchronously."""

from __future__ import annotations

import asyncio

import pytest

from broadcast_layer import ChannelFull, MessageTooLarge, RedisUnavailable
from broadcast_layer.emitter import AsyncEmitter, EmitResult, Emitter, all_group, user_group

from .conftest import nothing_arrives, within


@pytest.fixture
def layer_settings(settings, redis_url, prefix):
    def configure(**config):
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
                "CONFIG": {"hosts": [redis_url], "prefix": prefix, **config},
            },
            "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
        }

    configure()
    return configure


@pytest.fixture
def emitter(layer_settings):
    emitter = Emitter()
    yield emitter
    emitter.close()


async def two_members(nodes, group):
    channels = [await nodes[i].new_channel() for i in (0, 1)]
    for i in (0, 1):
        await nodes[i].group_add(group, channels[i])
    return channels


async def test_group_reaches_members_on_two_nodes_and_reports_counts(nodes, emitter):
    channels = await two_members(nodes, "room42")
    result = await asyncio.to_thread(emitter.group, "room42", {"type": "m", "text": "hi"})
    assert result == EmitResult("room42", nodes=2, members=2)
    assert str(result) == "room42: published to 2 nodes, 2 members"
    for i in (0, 1):
        assert await within(nodes[i].receive(channels[i])) == {"type": "m", "text": "hi"}


async def test_user_all_and_several_groups(nodes, emitter):
    mine = await nodes[0].new_channel()
    await nodes[0].group_add(user_group(42), mine)
    await nodes[0].group_add(all_group(), mine)
    other = await nodes[1].new_channel()
    await nodes[1].group_add(all_group(), other)
    assert (await asyncio.to_thread(emitter.user, 42, {"type": "u"})).members == 1
    assert await within(nodes[0].receive(mine)) == {"type": "u"}
    await nothing_arrives(nodes[1], other)
    assert (await asyncio.to_thread(emitter.all, {"type": "a"})).nodes == 2
    assert await within(nodes[0].receive(mine)) == {"type": "a"}
    assert await within(nodes[1].receive(other)) == {"type": "a"}
    results = await asyncio.to_thread(emitter.groups, [user_group(42), all_group()], {"type": "g"})
    assert [r.members for r in results] == [1, 2]


async def test_channel_sends_to_one_process_specific_or_normal_channel(nodes, emitter):
    channel = await nodes[1].new_channel()
    assert (await asyncio.to_thread(emitter.channel, channel, {"type": "one"})).nodes == 1
    assert await within(nodes[1].receive(channel)) == {"type": "one"}
    await asyncio.to_thread(emitter.channel, "jobs", {"type": "job"})
    assert await within(nodes[0].receive("jobs")) == {"type": "job"}


async def test_what_it_sends_is_what_group_send_sends_even_encrypted(make_layer, layer_settings):
    layer_settings(symmetric_encryption_keys=["k1"])
    receiver = make_layer(symmetric_encryption_keys=["k1"])
    channel = await receiver.new_channel()
    await receiver.group_add("secret", channel)
    emitter = Emitter()
    try:
        await asyncio.to_thread(emitter.group, "secret", {"type": "m", "n": [1, 2]})
    finally:
        emitter.close()
    assert await within(receiver.receive(channel)) == {"type": "m", "n": [1, 2]}


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda e: e.group("bad name", {"type": "m"}), TypeError),
        (lambda e: e.group("ok", ["not", "a", "dict"]), TypeError),
        (lambda e: e.group("ok", {"type": "m", "x": object()}), TypeError),
        (lambda e: e.group("ok", {"type": "m", "x": "y" * 5_000_000}), MessageTooLarge),
        (lambda e: e.groups(["ok", "bad name"], {"type": "m"}), TypeError),
        (lambda e: e.channel("bad name!", {"type": "m"}), TypeError),
    ],
)
async def test_bad_input_raises_and_sends_nothing(nodes, emitter, call, error):
    channel = (await two_members(nodes, "ok"))[0]
    with pytest.raises(error):
        await asyncio.to_thread(call, emitter)
    await nothing_arrives(nodes[0], channel)


async def test_a_full_channel_raises_channel_full(make_layer, layer_settings):
    layer_settings(capacity=1)
    owner = make_layer(capacity=1)
    channel = await owner.new_channel()
    emitter = Emitter()
    try:
        await asyncio.to_thread(emitter.channel, channel, {"type": "m"})
        with pytest.raises(ChannelFull):
            await asyncio.to_thread(emitter.channel, channel, {"type": "m"})
    finally:
        emitter.close()


def test_unknown_alias_and_foreign_layer_are_value_errors(layer_settings):
    with pytest.raises(ValueError, match="nope"):
        Emitter("nope")
    with pytest.raises(ValueError, match="not BroadcastChannelLayer"):
        Emitter("memory")


def test_redis_unreachable_is_redis_unavailable(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    emitter = Emitter()
    with pytest.raises(RedisUnavailable):
        emitter.group("room", {"type": "m"})
    emitter.close()


async def test_async_emitter(nodes, layer_settings):
    channels = await two_members(nodes, "async-room")
    emitter = AsyncEmitter()
    assert await emitter.group("async-room", {"type": "m"}) == EmitResult("async-room", 2, 2)
    assert (await emitter.channel(channels[1], {"type": "direct"})).nodes == 1
    assert await within(nodes[1].receive(channels[1])) == {"type": "m"}
    assert await within(nodes[1].receive(channels[1])) == {"type": "direct"}
    await emitter.layer.close()
