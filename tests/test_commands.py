"""`manage.py broadcast` and `manage.py rooms`, in-process and as real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from .conftest import nothing_arrives, within

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def layer_settings(settings, redis_url, prefix):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        },
        "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    }


@pytest.fixture
def manage(redis_url, prefix):
    """Run ``python manage.py ...`` in a subprocess against the test's Redis and prefix."""

    def run(*args: str, stdin: str | None = None, url: str | None = None):
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "REDIS_URL": url or redis_url,
            "BROADCAST_TEST_PREFIX": prefix,
        }
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    return run


async def members_on_two_nodes(nodes, group="room42"):
    channels = [await nodes[i].new_channel() for i in (0, 1)]
    for i in (0, 1):
        await nodes[i].group_add(group, channels[i])
    return channels


async def test_broadcast_sends_text_with_the_default_type(nodes, manage):
    channels = await members_on_two_nodes(nodes)
    result = await asyncio.to_thread(manage, "broadcast", "room42", "hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "room42: published to 2 nodes, 2 members"
    for i in (0, 1):
        assert await within(nodes[i].receive(channels[i])) == {
            "type": "broadcast.message",
            "text": "hello",
        }


async def test_broadcast_type_json_and_json_output(nodes, manage):
    channels = await members_on_two_nodes(nodes)
    result = await asyncio.to_thread(
        manage, "broadcast", "room42", "--type", "chat.notice", "--json", '{"level": 2}',
        "--output", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"target": "room42", "nodes": 2, "members": 2}
    assert await within(nodes[0].receive(channels[0])) == {"type": "chat.notice", "level": 2}


async def test_broadcast_to_a_user_a_channel_and_everyone(nodes, settings):
    mine = await nodes[0].new_channel()
    await nodes[0].group_add("user.7", mine)
    await nodes[0].group_add("broadcast.all", mine)
    out = StringIO()
    call_command("broadcast", "hi you", user="7", stdout=out)
    assert out.getvalue().strip() == "user.7: published to 1 node, 1 member"
    assert (await within(nodes[0].receive(mine)))["text"] == "hi you"
    call_command("broadcast", "just one", channel=mine, stdout=out)
    assert (await within(nodes[0].receive(mine)))["text"] == "just one"
    call_command("broadcast", "everyone", "--all", quiet=True, stdout=(quiet := StringIO()))
    assert quiet.getvalue() == ""
    assert (await within(nodes[0].receive(mine)))["text"] == "everyone"


async def test_the_default_type_comes_from_settings(nodes, settings):
    settings.BROADCAST_LAYER = {"DEFAULT_TYPE": "site.announcement"}
    channel = (await members_on_two_nodes(nodes))[0]
    call_command("broadcast", "room42", "maintenance", stdout=StringIO())
    assert (await within(nodes[0].receive(channel)))["type"] == "site.announcement"


async def test_stdin_streams_one_message_per_line(nodes, manage):
    channel = (await members_on_two_nodes(nodes))[0]
    lines = "".join(f"line {n}\n" for n in range(1200))
    result = await asyncio.to_thread(manage, "broadcast", "room42", "--stdin", "--quiet",
                                     stdin=lines)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "1000 sent" in result.stderr
    assert "1200 sent" in result.stderr
    texts = []
    while len(texts) < 50:  # the mailbox holds `capacity` (100): read the first ones
        texts.append((await within(nodes[0].receive(channel)))["text"])
    assert texts == [f"line {n}" for n in range(50)]


async def test_stdin_json_lines(nodes, manage):
    channel = (await members_on_two_nodes(nodes))[0]
    result = await asyncio.to_thread(
        manage, "broadcast", "room42", "--stdin", "--json", "-",
        stdin='{"type": "a", "n": 1}\n{"n": 2}\n',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert await within(nodes[0].receive(channel)) == {"type": "a", "n": 1}
    assert await within(nodes[0].receive(channel)) == {"type": "broadcast.message", "n": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["broadcast", "bad name!", "hi"], "Group name must be a valid"),
        (["broadcast", "room42", "--json", "{not json"], "not valid JSON"),
        (["broadcast", "room42", "--json", "[1, 2]"], "must be a JSON object"),
        (["broadcast", "room42", "x" * 5_000_000], "max_message_size"),
        (["broadcast", "room42", "hi", "--layer", "nope"], "No channel layer 'nope'"),
        (["broadcast", "room42", "hi", "--layer", "memory"], "not BroadcastChannelLayer"),
        (["broadcast"], "Name a group"),
        (["broadcast", "room42"], "Give a text"),
        (["broadcast", "room42", "hi", "--bogus"], "unrecognized arguments: --bogus"),
        (["rooms", "--layer", "nope"], "No channel layer 'nope'"),
        (["rooms", "bad name!"], "Group name must be a valid"),
    ],
)
async def test_bad_input_is_one_line_nonzero_and_sends_nothing(nodes, manage, args, message):
    channels = await members_on_two_nodes(nodes)
    if args[-1].startswith("x" * 10):  # too long for argv: pass through stdin instead
        args = [*args[:-1], "--stdin"]
        result = await asyncio.to_thread(manage, *args, stdin="x" * 5_000_000 + "\n")
    else:
        result = await asyncio.to_thread(manage, *args)
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(error_lines) == 1
    for i in (0, 1):
        await nothing_arrives(nodes[i], channels[i], 0.1)


async def test_redis_unreachable_is_a_one_line_error(manage):
    result = await asyncio.to_thread(
        manage, "broadcast", "room42", "hi", url="redis://127.0.0.1:1/0"
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("CommandError: Redis is unreachable")
    assert len(result.stderr.strip().splitlines()) == 1


def test_call_command_raises_command_error():
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("broadcast", "room42", json="{", stdout=StringIO())


async def test_rooms_lists_rooms_members_and_nodes(nodes, manage):
    channels = await members_on_two_nodes(nodes)
    await nodes[0].group_add("quiet-room", channels[0])
    await nodes[0].set_channel_metadata(channels[0], {"name": "Ann"})
    table = await asyncio.to_thread(manage, "rooms", "--sort", "size")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ROOM", "MEMBERS", "NODES"]
    assert lines[2].split() == ["room42", "2", "2"]
    assert lines[3].split() == ["quiet-room", "1", "1"]
    as_json = json.loads((await asyncio.to_thread(manage, "rooms", "--json")).stdout)
    assert as_json["rooms"] == [
        {"name": "quiet-room", "size": 1, "nodes": 1},
        {"name": "room42", "size": 2, "nodes": 2},
    ]
    filtered = json.loads(
        (await asyncio.to_thread(manage, "rooms", "--json", "--match", "q*")).stdout
    )
    assert [room["name"] for room in filtered["rooms"]] == ["quiet-room"]
    members = await asyncio.to_thread(manage, "rooms", "room42")
    assert channels[0] in members.stdout
    assert nodes[0].node_id in members.stdout
    assert '"name": "Ann"' in members.stdout
    member_json = json.loads((await asyncio.to_thread(manage, "rooms", "room42", "--json")).stdout)
    assert {m["channel"] for m in member_json["members"]} == set(channels)
    node_json = json.loads((await asyncio.to_thread(manage, "rooms", "--nodes", "--json")).stdout)
    assert {nodes[0].node_id, nodes[1].node_id} <= {n["id"] for n in node_json["nodes"]}


async def test_rooms_watch_refreshes_in_place(nodes, redis_url, prefix):
    await members_on_two_nodes(nodes)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "REDIS_URL": redis_url,
           "BROADCAST_TEST_PREFIX": prefix}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "manage.py", "rooms", "--watch", "0.1", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output = b""
    async with asyncio.timeout(20):
        while output.count(b"\x1b[H\x1b[2J") < 2:
            output += await process.stdout.read(4096)
    process.send_signal(2)  # Ctrl-C ends it quietly
    assert await within(process.wait(), 10) == 0
    assert b"room42" in output
