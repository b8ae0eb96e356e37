"""The Channels channel layer specification, against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import ChannelFull, MessageTooLarge

from broadcast_layer.layer import BroadcastChannelLayer

from .conftest import eventually, nothing_arrives, within


async def test_extensions_and_new_channel_names(layer):
    assert set(layer.extensions) == {"groups", "flush"}
    first, second = await layer.new_channel(), await layer.new_channel()
    assert first != second
    assert first.startswith(f"specific.{layer.node_id}!")
    assert (await layer.new_channel("custom.prefix")).startswith("custom.prefix.")


async def test_send_and_receive_on_a_local_process_specific_channel(layer):
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "test.message", "text": "hello"})
    assert await within(layer.receive(channel)) == {"type": "test.message", "text": "hello"}


async def test_receivers_get_a_copy_not_the_senders_object(layer):
    channel = await layer.new_channel()
    message = {"type": "t", "nested": {"a": 1}}
    await layer.send(channel, message)
    message["nested"]["a"] = 2
    assert (await within(layer.receive(channel)))["nested"] == {"a": 1}


async def test_process_specific_channel_reaches_its_owner_from_another_node(nodes):
    sender, owner = nodes[0], nodes[1]
    channel = await owner.new_channel()
    await sender.send(channel, {"type": "remote", "n": 1})
    assert await within(owner.receive(channel)) == {"type": "remote", "n": 1}


async def test_only_the_owner_can_receive_a_process_specific_channel(nodes):
    channel = await nodes[1].new_channel()
    with pytest.raises(ValueError, match="another node"):
        await nodes[0].receive(channel)


@pytest.mark.parametrize("where", ["local", "remote", "normal"])
async def test_a_single_reader_gets_messages_in_order(nodes, where):
    sender, owner = nodes[0], nodes[0 if where == "local" else 1]
    channel = "jobs.ordered" if where == "normal" else await owner.new_channel()
    for n in range(50):
        await sender.send(channel, {"type": "seq", "n": n})
    received = [(await within(owner.receive(channel)))["n"] for _ in range(50)]
    assert received == list(range(50))


async def test_normal_channels_are_queues_shared_by_competing_consumers(nodes):
    consumed: list[list[int]] = [[], []]
    all_consumed = asyncio.Event()

    async def worker(layer, out):
        while True:
            out.append((await layer.receive("tasks"))["n"])
            if len(consumed[0]) + len(consumed[1]) == 100:
                all_consumed.set()

    workers = [asyncio.create_task(worker(nodes[i + 1], consumed[i])) for i in range(2)]
    for n in range(100):
        await nodes[0].send("tasks", {"type": "task", "n": n})
    await within(all_consumed.wait(), 10)
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    assert sorted(consumed[0] + consumed[1]) == list(range(100))
    assert not set(consumed[0]) & set(consumed[1])


async def test_groups_deliver_to_every_member_and_discard_stops_it(nodes):
    a, b = await nodes[0].new_channel(), await nodes[1].new_channel()
    await nodes[0].group_add("room", a)
    await nodes[1].group_add("room", b)
    await nodes[2].group_send("room", {"type": "m", "n": 1})
    assert (await within(nodes[0].receive(a)))["n"] == 1
    assert (await within(nodes[1].receive(b)))["n"] == 1
    await nodes[1].group_discard("room", b)
    await nodes[2].group_send("room", {"type": "m", "n": 2})
    assert (await within(nodes[0].receive(a)))["n"] == 2
    await nothing_arrives(nodes[1], b)


async def test_discarding_a_non_member_and_sending_to_an_empty_group_are_no_ops(layer):
    channel = await layer.new_channel()
    await layer.group_discard("nobody-here", channel)
    assert await layer.group_send("nobody-here", {"type": "m"}) == 0


async def test_local_capacity_raises_channel_full(make_layer):
    layer = make_layer(capacity=3)
    channel = await layer.new_channel()
    for n in range(3):
        await layer.send(channel, {"type": "m", "n": n})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "m", "n": 3})
    assert (await within(layer.receive(channel)))["n"] == 0
    await layer.send(channel, {"type": "m", "n": 4})


async def test_remote_capacity_raises_channel_full_and_frees_up_after_receive(make_layer):
    sender, owner = make_layer(capacity=3), make_layer(capacity=3)
    channel = await owner.new_channel()
    for n in range(3):
        await sender.send(channel, {"type": "m", "n": n})
    with pytest.raises(ChannelFull):
        await sender.send(channel, {"type": "m", "n": 3})
    for n in range(3):
        assert (await within(owner.receive(channel)))["n"] == n
    async with asyncio.timeout(5):  # slots are given back asynchronously, in one pipeline
        while True:
            try:
                await sender.send(channel, {"type": "m", "n": 99})
                break
            except ChannelFull:
                await asyncio.sleep(0.01)
    assert (await within(owner.receive(channel)))["n"] == 99


async def test_normal_channel_capacity_raises_channel_full(make_layer):
    layer = make_layer(capacity=2)
    await layer.send("queue.a", {"type": "m"})
    await layer.send("queue.a", {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send("queue.a", {"type": "m"})


async def test_channel_capacity_patterns_override_the_default(make_layer):
    layer = make_layer(capacity=100, channel_capacity={"tiny.*": 1})
    await layer.send("tiny.q", {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send("tiny.q", {"type": "m"})
    assert layer.get_capacity("tiny.q") == 1
    assert layer.get_capacity("other") == 100
    for _ in range(5):
        await layer.send("other", {"type": "m"})


async def test_group_send_never_raises_and_a_full_member_loses_only_its_copy(make_layer):
    receiver, sender = make_layer(capacity=2), make_layer()
    slow, fast = await receiver.new_channel(), await receiver.new_channel()
    await receiver.group_add("g", slow)
    await receiver.group_add("g", fast)
    for n in range(5):
        await sender.group_send("g", {"type": "m", "n": n})
        assert (await within(receiver.receive(fast)))["n"] == n
    assert [(await within(receiver.receive(slow)))["n"] for _ in range(2)] == [0, 1]
    await nothing_arrives(receiver, slow)
    assert receiver.stats().dropped == 3


async def test_each_member_gets_its_own_copy(layer):
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", a)
    await layer.group_add("g", b)
    await layer.group_send("g", {"type": "m", "nested": {"x": [1]}})
    first = await within(layer.receive(a))
    first["nested"]["x"].append(2)
    assert (await within(layer.receive(b)))["nested"] == {"x": [1]}


async def test_a_one_megabyte_message_works_and_an_oversized_one_raises(nodes):
    channel = await nodes[1].new_channel()
    big = "x" * (1024 * 1024)
    await nodes[0].send(channel, {"type": "big", "data": big})
    assert (await within(nodes[1].receive(channel)))["data"] == big
    await nodes[1].group_add("big", channel)
    await nodes[0].group_send("big", {"type": "big", "data": big})
    assert (await within(nodes[1].receive(channel)))["data"] == big
    with pytest.raises(MessageTooLarge):
        await nodes[0].send(channel, {"type": "big", "data": "x" * (5 * 1024 * 1024)})
    with pytest.raises(MessageTooLarge):
        await nodes[0].group_send("big", {"type": "big", "data": "x" * (5 * 1024 * 1024)})
    await nothing_arrives(nodes[1], channel)


@pytest.mark.parametrize(
    "bad",
    [None, "", "has space", "bad\nname", "é", "x" * 120, 42, b"bytes"],
)
async def test_invalid_names_raise_type_error_and_change_nothing(layer, redis_client, bad):
    channel = await layer.new_channel()
    before = set(redis_client.pubsub_channels())
    with pytest.raises(TypeError):
        await layer.send(bad, {"type": "m"})
    with pytest.raises(TypeError):
        await layer.group_add(bad, channel)
    with pytest.raises(TypeError):
        await layer.group_add("good", bad)
    with pytest.raises(TypeError):
        await layer.group_send(bad, {"type": "m"})
    with pytest.raises(TypeError):
        await layer.group_discard(bad, channel)
    with pytest.raises(TypeError):
        await layer.receive(bad)
    assert set(redis_client.pubsub_channels()) == before
    assert layer.stats().groups == frozenset()


@pytest.mark.parametrize("bad", [None, "text", ["type"], 3, ("a", "b")])
async def test_non_dict_messages_raise_type_error(layer, bad):
    channel = await layer.new_channel()
    with pytest.raises(TypeError, match="dict"):
        await layer.send(channel, bad)
    with pytest.raises(TypeError, match="dict"):
        await layer.group_send("g", bad)
    await nothing_arrives(layer, channel)


async def test_unserializable_values_raise_type_error_and_send_nothing(nodes):
    channel = await nodes[1].new_channel()
    await nodes[1].group_add("g", channel)
    with pytest.raises(TypeError, match="serialized"):
        await nodes[0].send(channel, {"type": "m", "value": object()})
    with pytest.raises(TypeError, match="serialized"):
        await nodes[0].group_send("g", {"type": "m", "value": {1, 2}})
    await nodes[0].send(channel, {"type": "after"})
    assert await within(nodes[1].receive(channel)) == {"type": "after"}


async def test_unread_messages_expire_in_a_queue(make_layer):
    layer = make_layer(expiry=0.3)
    await layer.send("expiring.q", {"type": "old"})
    await asyncio.sleep(0.5)  # the behaviour under test is the passing of time
    await layer.send("expiring.q", {"type": "new"})
    assert await within(layer.receive("expiring.q")) == {"type": "new"}


@pytest.mark.parametrize("where", ["local", "remote"])
async def test_unread_messages_expire_in_a_backlog(make_layer, where):
    # A channel with no receive for over `expiry` is abandoned, so a message outlives
    # `expiry` unread only behind others, at a consumer that keeps receiving slowly.
    sender = make_layer(expiry=1)
    owner = sender if where == "local" else make_layer(expiry=1)
    channel = await owner.new_channel()
    for kind in ("first", "second", "old"):
        await sender.send(channel, {"type": kind})
    assert await within(owner.receive(channel)) == {"type": "first"}
    await asyncio.sleep(0.6)  # the behaviour under test is the passing of time
    assert await within(owner.receive(channel)) == {"type": "second"}
    await asyncio.sleep(0.6)  # "old" is now 1.2 s old; the channel was idle 0.6 s
    await sender.send(channel, {"type": "new"})
    assert await within(owner.receive(channel)) == {"type": "new"}


async def test_memberships_expire_after_group_expiry(make_layer, redis_client, prefix):
    layer, sender = make_layer(group_expiry=0.4), make_layer()
    channel = await layer.new_channel()
    await layer.group_add("short", channel)
    await asyncio.sleep(0.6)  # the behaviour under test is the passing of time
    await sender.group_send("short", {"type": "late"})
    await nothing_arrives(layer, channel)
    # the periodic sweep also drops the subscription
    await eventually(lambda: f"{prefix}:group:short".encode() not in redis_client.pubsub_channels())
    assert layer.stats().groups == frozenset()


async def test_flush_deletes_queued_messages(make_layer):
    layer = make_layer()
    await layer.send("flushed.q", {"type": "m"})
    await layer.flush()
    await layer.send("flushed.q", {"type": "after"})
    assert await within(layer.receive("flushed.q")) == {"type": "after"}


async def test_encrypted_messages_travel_and_are_not_readable_in_redis(
    make_layer, prefix, redis_url
):
    import redis.asyncio as aioredis

    keys = ["a-secret-key"]
    sender, owner = (
        make_layer(symmetric_encryption_keys=keys),
        make_layer(symmetric_encryption_keys=keys),
    )
    channel = await owner.new_channel()
    await owner.group_add("secret", channel)
    spy = aioredis.Redis.from_url(redis_url)
    async with spy.pubsub() as pubsub:
        await pubsub.subscribe(f"{prefix}:group:secret")
        await within(pubsub.get_message(timeout=5))  # the subscribe confirmation
        await sender.group_send("secret", {"type": "m", "text": "plaintext-marker"})
        raw = await within(pubsub.get_message(timeout=5))
    await spy.aclose()
    assert b"plaintext-marker" not in raw["data"]
    assert (await within(owner.receive(channel)))["text"] == "plaintext-marker"
    await sender.send(channel, {"type": "direct", "text": "also-secret"})
    assert (await within(owner.receive(channel)))["text"] == "also-secret"


async def test_a_node_with_the_wrong_key_drops_what_it_cannot_decrypt(make_layer, caplog):
    sender = make_layer(symmetric_encryption_keys=["right"])
    owner = make_layer(symmetric_encryption_keys=["wrong"])
    channel = await owner.new_channel()
    await owner.group_add("g", channel)
    await sender.group_send("g", {"type": "m"})
    await nothing_arrives(owner, channel)
    assert "undecodable" in caplog.text


async def test_json_serializer_puts_plain_json_on_the_wire(make_layer, prefix, redis_client):
    layer = make_layer(serializer_format="json")
    channel = await layer.new_channel()
    await layer.group_add("json", channel)
    reached = redis_client.publish(f"{prefix}:group:json", b'{"type": "from.cli", "n": 1}')
    assert reached == 1
    assert await within(layer.receive(channel)) == {"type": "from.cli", "n": 1}


def test_layer_is_usable_from_channels_get_channel_layer(settings, redis_url):
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": "via-settings"},
        }
    }
    layer = get_channel_layer()
    assert isinstance(layer, BroadcastChannelLayer)

    async def roundtrip():
        channel = await layer.new_channel()
        await layer.group_add("settings-group", channel)
        await layer.group_send("settings-group", {"type": "ok"})
        return await within(layer.receive(channel))

    assert async_to_sync(roundtrip)() == {"type": "ok"}
