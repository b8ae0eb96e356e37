"""The layer runs as the least-privilege ACL user of docs/security.md, and that user can
touch nothing outside its prefix. A redis-server of its own, so the ACL log is ours."""

from __future__ import annotations

import asyncio
import re
import secrets
import shlex
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.management import call_command

from broadcast_layer import ChannelFull
from broadcast_layer.acl import COMMANDS, acl_rules, acl_setuser
from broadcast_layer.admin import actions as admin_actions
from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.emitter import AsyncEmitter, Emitter
from broadcast_layer.layer import BroadcastChannelLayer, get_layer
from broadcast_layer.registry import SyncRegistry

from .conftest import eventually, within

ROOT = Path(__file__).resolve().parent.parent
USER = "broadcast"


@pytest.fixture(scope="module")
def acl_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(password=secrets.token_urlsafe(16)) as server:
        yield server


@pytest.fixture(scope="module")
def admin(acl_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(acl_server.url)
    yield client
    client.close()


def server_version(client: redis.Redis) -> tuple[int, int]:
    major, minor = str(client.info("server")["redis_version"]).split(".")[:2]
    return int(major), int(minor)


@pytest.fixture
def acl_url(acl_server: EmbeddedRedis, admin: redis.Redis, prefix: str) -> str:
    """A URL that logs in as a user created from acl_rules(prefix), and nothing more."""
    password = secrets.token_urlsafe(16)
    admin.execute_command("ACL", "SETUSER", USER, "reset", "on", f">{password}",
                          *acl_rules(prefix, server_version(admin)))  # fmt: skip
    admin.execute_command("ACL", "LOG", "RESET")
    return f"redis://{USER}:{password}@127.0.0.1:{acl_server.port}/0"


def denied(admin: redis.Redis) -> list[str]:
    """What the ACL refused since the last reset, as 'reason object' strings."""
    entries: list[Any] = admin.execute_command("ACL", "LOG")
    found = []
    for entry in entries:  # redis-py parses the reply into dicts, or leaves flat lists
        pairs = (
            entry.items() if isinstance(entry, dict) else zip(entry[::2], entry[1::2], strict=True)
        )
        fields = {_text(key): _text(value) for key, value in pairs}
        found.append(f"{fields['reason']} {fields['object']}")
    return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_every_command_of_every_script_is_granted():
    called = set()
    for path in (ROOT / "broadcast_layer").rglob("*.py"):
        called |= {m.lower() for m in re.findall(r"redis\.call\('(\w+)'", path.read_text())}
    assert called, "no Lua script found"
    granted = set(COMMANDS) | {name.partition("|")[0] for name in COMMANDS}  # subcommands
    assert called <= granted, f"not in COMMANDS: {sorted(called - granted)}"


def test_docs_show_the_rules_and_every_command():
    docs = (ROOT / "docs" / "security.md").read_text()
    one_line = " ".join(docs.replace("\\\n", " ").split())  # shell line continuations
    assert acl_setuser(USER, "asgi") in one_line  # regenerate the docs from acl_setuser()
    for command in COMMANDS:  # the table of commands, "|" escaped in Markdown
        escaped = command.replace("|", "\\|")
        assert f"| `{escaped}` |" in docs, command
    # and the line works when pasted into a shell
    words = shlex.split(acl_setuser(USER, "asgi"))
    assert words[:5] == ["ACL", "SETUSER", USER, "reset", "on"]


async def test_the_whole_layer_runs_as_the_acl_user(acl_url, admin, prefix, settings):
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
        "CONFIG": {"hosts": [acl_url], "prefix": prefix},
    }}  # fmt: skip
    config = {"hosts": [acl_url], "prefix": prefix, "heartbeat_interval": 0.2, "node_ttl": 1,
              "history": {"chat.*": {"size": 10, "ttl": 60}},
              "durable_channels": {"jobs.*": {"claim_after": 1}},
              "channel_capacity": {"small.*": 1}}  # fmt: skip
    a, b = BroadcastChannelLayer(**config), BroadcastChannelLayer(**config)
    sender = BroadcastChannelLayer(**config)
    try:
        await a.ping()
        ch_a, ch_b = await a.new_channel(), await b.new_channel()
        small = await b.new_channel("small")  # counted from the start: its node sets its credit

        # channels: another node's (its credit: read, taken, given back), a normal one (queue)
        await sender.send(ch_b, {"type": "direct"})
        assert (await within(b.receive(ch_b)))["type"] == "direct"
        await sender.send(small, {"type": "direct"})
        with pytest.raises(ChannelFull):
            await sender.send(small, {"type": "over capacity"})
        assert (await within(b.receive(small)))["type"] == "direct"
        await a.send("worker-queue", {"type": "queued"})
        assert (await within(b.receive("worker-queue")))["type"] == "queued"

        # groups, metadata and remote operations (control messages)
        await a.group_add("room", ch_a)
        await b.group_add("room", ch_b)
        await a.set_channel_metadata(ch_a, {"name": "Ann"})
        await a.group_send("room", {"type": "to.all"})
        for layer, channel in ((a, ch_a), (b, ch_b)):
            assert (await within(layer.receive(channel)))["type"] == "to.all"
        await a.group_add("remote", ch_b)
        assert b.local_members("remote") == {ch_b}
        await a.group_discard("remote", ch_b)
        assert await a.disconnect(ch_b) is True
        assert (await within(b.receive(ch_b)))["type"] == "broadcast.disconnect"

        # history groups (append, publish, read, catch-up) and durable channels
        await b.group_add("chat.room", ch_b)
        await a.group_send("chat.room", {"type": "kept"})
        assert (await within(b.receive(ch_b)))["history"]["offset"] == 1
        assert [m.offset for m in (await a.group_history("chat.room", since=0)).messages] == [1]
        await b.group_discard("chat.room", ch_b)
        await a.send("jobs.x", {"type": "job"})
        assert (await within(b.receive("jobs.x")))["type"] == "job"
        await b.send("jobs.x", {"type": "job"})
        assert (await within(b.receive("jobs.x")))["type"] == "job"  # acknowledges the first

        # registry queries, async and sync
        assert [r.name for r in (await a.registry.rooms(pattern="ro*")).rooms] == ["room"]
        assert (await a.registry.rooms(order="size")).total == 1
        assert (await a.registry.room("room")).size == 2
        assert await a.registry.room_size("room") == 2
        assert await a.registry.members_per_node("room") == {a.node_id: 1, b.node_id: 1}
        assert {m.metadata.get("name") for m in await a.registry.members("room")} == {"Ann", None}
        assert set(await a.registry.groups_of(ch_a)) == {"room"}
        assert {n.id for n in await a.registry.nodes()} == {a.node_id, b.node_id}
        assert [c.channel for c in await a.registry.node_channels(a.node_id)] == [ch_a]
        sync_registry = SyncRegistry(a.config)
        try:
            assert await asyncio.to_thread(sync_registry.room_size, "room") == 2
            assert len(await asyncio.to_thread(sync_registry.nodes)) == 2
        finally:
            sync_registry.close()

        # heartbeats refresh the node records
        first = {n.id: n.heartbeat for n in await a.registry.nodes()}

        async def beat_again() -> bool:
            return all(n.heartbeat > first[n.id] for n in await a.registry.nodes())

        await eventually(beat_again, 10)

        # the emitter, the management commands and the admin's actions
        emitter = Emitter()
        try:
            result = await asyncio.to_thread(emitter.group, "room", {"type": "emitted"})
            assert result.members == 2
            await asyncio.to_thread(emitter.channel, ch_a, {"type": "emitted.direct"})
        finally:
            emitter.close()
        await AsyncEmitter().group("room", {"type": "emitted.async"})
        out = StringIO()
        await asyncio.to_thread(call_command, "rooms", "--format", "json", stdout=out)
        assert "room" in out.getvalue()
        await asyncio.to_thread(call_command, "broadcast", "room", "hello", stdout=StringIO())
        await asyncio.to_thread(admin_actions.remove, "default", "room", ch_b)
        assert await a.registry.room_size("room") == 1
        for kind in ("emitted", "emitted.direct", "emitted.async", "broadcast.message"):
            assert (await within(a.receive(ch_a)))["type"] == kind

        # leaving, closing (retires the node's records) and flushing
        await a.group_discard("room", ch_a)
        await b.close()
        await get_layer().close()
        await a.flush()
    finally:
        for layer in (a, b, sender):
            await layer.close()
    assert admin.keys(f"{prefix}:*") == []
    refused = denied(admin)
    if server_version(admin) < (7, 2):
        # redis-py's CLIENT SETINFO on connect, which servers before 7.2 do not know (so
        # it cannot be granted) and redis-py ignores: not a command of the layer.
        refused = [entry for entry in refused if entry != "command client"]
    assert refused == []  # nothing the layer did was refused


async def test_the_acl_user_cannot_touch_anything_outside_its_prefix(acl_url, admin, prefix):
    admin.set("other-site:secret", "x")
    user = redis.Redis.from_url(acl_url)
    try:
        for command in (
            ("GET", "other-site:secret"),
            ("SET", "other-site:secret", "y"),
            ("DEL", "other-site:secret"),
            ("PUBLISH", "other-site:group:room", "x"),
            ("KEYS", "*"),
            ("FLUSHALL",),
            ("CONFIG", "GET", "*"),
            ("EVAL", "return 1", "0"),
            ("ACL", "LIST"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.execute_command(*command)
        # A script it loads runs with its permissions, no more.
        sha = user.script_load("return redis.call('DEL', 'other-site:secret')")
        with pytest.raises(redis.exceptions.ResponseError, match="can't access"):
            user.evalsha(sha, 0)
    finally:
        user.close()
    assert admin.get("other-site:secret") == b"x"

    stranger = BroadcastChannelLayer(hosts=[acl_url], prefix=f"{prefix}x")
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            await stranger.group_send("room", {"type": "x"})
    finally:
        await stranger.close()
