"""Control messages (remote join, leave, disconnect) are authenticated when keys are set.

Someone with Redis access publishes forged, replayed and redirected control messages
straight to a node's channel with a raw client: nothing happens, a warning is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging

import msgpack
import pytest
from redis import asyncio as aioredis

from broadcast_layer import RedisUnavailable

from .conftest import eventually, nothing_arrives, within

KEYS = ["control-test-key"]


def dropped_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name.startswith("broadcast_layer") and record.getMessage().startswith("Dropped")
    ]


@pytest.fixture(autouse=True)
def _capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="broadcast_layer")


async def capture(redis_url: str, prefix: str) -> aioredis.client.PubSub:
    """A raw subscriber to every node channel of ``prefix``, listening when it returns."""
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.psubscribe(f"{prefix}:node:*")
    while await pubsub.get_message(timeout=5) is None:  # the psubscribe confirmation
        pass
    return pubsub


async def captured_to(pubsub: aioredis.client.PubSub, node_channel: str) -> bytes:
    """The next control payload published on ``node_channel``."""
    async with asyncio.timeout(10):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message and message["channel"].decode() == node_channel:
                data: bytes = message["data"]
                if data.startswith(b"!"):
                    return data


async def close_capture(pubsub: aioredis.client.PubSub) -> None:
    await pubsub.aclose()
    await pubsub.connection_pool.disconnect()


async def test_remote_operations_work_and_travel_sealed(make_layer, redis_url, prefix):
    owner = make_layer(symmetric_encryption_keys=KEYS)
    other = make_layer(symmetric_encryption_keys=KEYS)
    channel = await owner.new_channel()
    pubsub = await capture(redis_url, prefix)
    try:
        await other.group_add("vault-room", channel)
        wire = await captured_to(pubsub, f"{prefix}:node:{owner.node_id}")
    finally:
        await close_capture(pubsub)
    # On the wire: neither the operation nor the names it carries are readable.
    for secret in (b"group_add", b"vault-room", channel.encode(), owner.node_id.encode()):
        assert secret not in wire
    assert owner.local_members("vault-room") == {channel}

    await other.group_send("vault-room", {"type": "hello"})
    assert (await within(owner.receive(channel)))["type"] == "hello"
    await other.group_discard("vault-room", channel)
    assert owner.local_members("vault-room") == frozenset()
    assert await other.disconnect(channel) is True
    assert (await within(owner.receive(channel)))["type"] == "broadcast.disconnect"
    assert owner.stats().rejected == 0


async def test_forged_plaintext_control_messages_are_dropped_and_logged(
    make_layer, redis_client, prefix, caplog
):
    owner = make_layer(symmetric_encryption_keys=KEYS)
    channel = await owner.new_channel()
    node_channel = f"{prefix}:node:{owner.node_id}"
    forgeries = [
        {"op": "group_add", "group": "stolen", "channel": channel, "to": owner.node_id},
        {"op": "disconnect", "channel": channel, "to": owner.node_id},
    ]
    for forged in forgeries:
        redis_client.publish(node_channel, b"!" + json.dumps(forged).encode())
    redis_client.publish(node_channel, b"!gAAAAABnot-a-real-fernet-token==")

    await eventually(lambda: owner.stats().rejected >= 3)
    assert owner.local_members("stolen") == frozenset()
    assert await owner.registry.members("stolen") == []
    await nothing_arrives(owner, channel)  # no disconnect
    warnings = dropped_warnings(caplog)
    assert warnings, "a forged control message must be logged"
    assert "control message" in warnings[0].getMessage()
    assert all(record.levelno == logging.WARNING and record.exc_info is None
               for record in warnings)  # fmt: skip


async def test_a_flood_of_forgeries_costs_a_few_log_lines(make_layer, redis_client, prefix, caplog):
    owner = make_layer(symmetric_encryption_keys=KEYS)
    await owner.new_channel()
    forged = b'!{"op": "disconnect", "channel": "x"}'
    for _ in range(200):
        redis_client.publish(f"{prefix}:node:{owner.node_id}", forged)
    await eventually(lambda: owner.stats().rejected >= 200)
    assert 1 <= len(dropped_warnings(caplog)) <= 2


async def test_a_captured_message_cannot_be_replayed_or_redirected(
    make_layer, redis_url, redis_client, prefix
):
    owner, other, bystander = (make_layer(symmetric_encryption_keys=KEYS) for _ in range(3))
    channel = await owner.new_channel()
    await bystander.new_channel()  # so it listens on its node channel
    pubsub = await capture(redis_url, prefix)
    try:
        await other.group_add("room", channel)
        sealed = await captured_to(pubsub, f"{prefix}:node:{owner.node_id}")
    finally:
        await close_capture(pubsub)
    await owner.group_discard("room", channel)

    redis_client.publish(f"{prefix}:node:{owner.node_id}", sealed)  # replayed
    redis_client.publish(f"{prefix}:node:{bystander.node_id}", sealed)  # redirected
    await eventually(lambda: owner.stats().rejected == 1 and bystander.stats().rejected == 1)
    assert owner.local_members("room") == frozenset()
    assert bystander.local_members("room") == frozenset()


async def test_a_payload_token_does_not_pass_for_a_control_message(
    make_layer, redis_client, prefix
):
    owner = make_layer(symmetric_encryption_keys=KEYS, serializer_format="json")
    channel = await owner.new_channel()
    # A message any sender may encrypt, shaped like a control message: a payload token
    # must not be accepted as one (the control keys are derived apart).
    token = owner.encode({"op": "disconnect", "channel": channel, "to": owner.node_id})
    redis_client.publish(f"{prefix}:node:{owner.node_id}", b"!" + token)
    await eventually(lambda: owner.stats().rejected == 1)
    await nothing_arrives(owner, channel)


async def test_nodes_with_different_keys_cannot_control_each_other(make_layer):
    owner = make_layer(symmetric_encryption_keys=["one key"])
    stranger = make_layer(symmetric_encryption_keys=["another key"], subscribe_timeout=1)
    channel = await owner.new_channel()
    with pytest.raises(RedisUnavailable):
        await stranger.group_add("room", channel)
    with pytest.raises(RedisUnavailable):
        await stranger.disconnect(channel)
    await eventually(lambda: owner.stats().rejected == 2)
    assert owner.local_members("room") == frozenset()
    await nothing_arrives(owner, channel)


async def test_without_keys_malformed_control_messages_are_dropped_without_a_traceback(
    make_layer, redis_client, prefix, caplog
):
    owner = make_layer()
    channel = await owner.new_channel()
    for junk in [b"!not json", b"![1, 2]", b'!{"op": "explode"}', b'!{"op": "disconnect"}',
                 b'!{"op": "disconnect", "channel": 5}']:  # fmt: skip
        redis_client.publish(f"{prefix}:node:{owner.node_id}", junk)
    await eventually(lambda: owner.stats().rejected == 5)
    await nothing_arrives(owner, channel)
    assert all(record.exc_info is None for record in caplog.records)
    # and plaintext control between nodes without keys still works
    other = make_layer()
    await other.group_add("room", channel)
    assert owner.local_members("room") == {channel}


async def test_a_forged_message_for_a_channel_is_dropped_without_a_traceback(
    make_layer, redis_client, prefix, caplog
):
    owner = make_layer(symmetric_encryption_keys=KEYS)
    channel = await owner.new_channel()
    plain = msgpack.packb({"type": "chat.message", "text": "forged"})
    redis_client.publish(f"{prefix}:node:{owner.node_id}", channel.encode() + b"\n" + plain)
    await eventually(lambda: owner.stats().rejected == 1)
    await nothing_arrives(owner, channel)
    assert all(record.exc_info is None for record in caplog.records)
    assert "undecodable" in dropped_warnings(caplog)[0].getMessage()
