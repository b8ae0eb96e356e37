"""`manage.py broadcast` and `manage.py rooms`, in-process and as real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from io import BytesIO, StringIO, TextIOWrapper
from pathlib import Path
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from hypothesis import given
from hypothesis import strategies as st

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
        manage, "broadcast", "room42", "--type", "chat.notice", "--json-body", '{"level": 2}',
        "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"target": "room42", "nodes": 2, "members": 2}
    assert await within(nodes[0].receive(channels[0])) == {"type": "chat.notice", "level": 2}


async def test_the_new_spellings_print_no_warning(nodes, manage):
    await members_on_two_nodes(nodes)
    result = await asyncio.to_thread(
        manage, "broadcast", "room42", "--json-body", '{"n": 1}', "--format", "json"
    )
    assert (result.returncode, result.stderr) == (0, "")
    rooms = await asyncio.to_thread(manage, "rooms", "--format", "json")
    assert (rooms.returncode, rooms.stderr) == (0, "")
    assert json.loads(rooms.stdout)["rooms"] == [{"name": "room42", "size": 2, "nodes": 2}]


async def test_the_old_spellings_still_work_with_one_deprecation_line_each(nodes, manage):
    channels = await members_on_two_nodes(nodes)
    result = await asyncio.to_thread(
        manage, "broadcast", "room42", "--json", '{"level": 3}', "--output", "json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"target": "room42", "nodes": 2, "members": 2}
    assert result.stderr.splitlines() == [
        "DeprecationWarning: --json OBJECT is deprecated; use --json-body OBJECT instead.",
        "DeprecationWarning: --output json is deprecated; use --format json instead.",
    ]
    assert await within(nodes[0].receive(channels[0])) == {
        "type": "broadcast.message",
        "level": 3,
    }
    rooms = await asyncio.to_thread(manage, "rooms", "--json")
    assert rooms.returncode == 0, rooms.stderr
    assert json.loads(rooms.stdout)["rooms"] == [{"name": "room42", "size": 2, "nodes": 2}]
    assert rooms.stderr.splitlines() == [
        "DeprecationWarning: --json is deprecated; use --format json instead."
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["broadcast", "room42", "--json", "{}", "--json-body", "{}"],
        ["broadcast", "room42", "hi", "--output", "json", "--format", "json"],
        ["rooms", "--json", "--format", "json"],
    ],
)
def test_an_old_and_a_new_spelling_together_are_refused(args):
    with pytest.raises(CommandError, match="not allowed with argument") as caught:
        call_command(*args, stdout=StringIO(), stderr=StringIO())
    assert "\n" not in str(caught.value)


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
        manage, "broadcast", "room42", "--stdin", "--json-body", "-",
        stdin='{"type": "a", "n": 1}\n{"n": 2}\n',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert await within(nodes[0].receive(channel)) == {"type": "a", "n": 1}
    assert await within(nodes[0].receive(channel)) == {"type": "broadcast.message", "n": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["broadcast", "bad name!", "hi"], "Group name must be a valid"),
        (["broadcast", "room42", "--json-body", "{not json"], "not valid JSON"),
        (["broadcast", "room42", "--json-body", "[1, 2]"], "must be a JSON object"),
        (["broadcast", "room42", "x" * 5_000_000], "max_message_size"),
        (["broadcast", "room42", "hi", "--layer", "nope"], "No channel layer 'nope'"),
        (["broadcast", "room42", "hi", "--layer", "memory"], "not BroadcastChannelLayer"),
        (["broadcast"], "Name a group"),
        (["broadcast", "room42"], "Give a text"),
        (["broadcast", "room42", "hi", "--bogus"], "unrecognized arguments: --bogus"),
        (["rooms", "--layer", "nope"], "No channel layer 'nope'"),
        (["rooms", "bad name!"], "Group name must be a valid"),
        (["rooms", "--watch", "nan"], "--watch: must be a number from 0.1 to 86400"),
        (["broadcast", "room42", "hi", "--type", "bad!type"], "is not a handler name"),
        (["broadcast", "room42", "--json-body", "[" * 50_000 + "]" * 50_000], "more than 32 deep"),
        (["broadcast", "room42", "--stdin", "--json-body", "-"], "line 3: The message type"),
    ],
)
async def test_bad_input_is_one_line_nonzero_and_sends_nothing(nodes, manage, args, message):
    channels = await members_on_two_nodes(nodes)
    if args[-1].startswith("x" * 10):  # too long for argv: pass through stdin instead
        args = [*args[:-1], "--stdin"]
        result = await asyncio.to_thread(manage, *args, stdin="x" * 5_000_000 + "\n")
    elif "--stdin" in args:  # a batch whose third line is bad: nothing at all is sent
        batch = '{"n": 1}\n{"n": 2}\n{"type": "bad!type"}\n{"n": 4}\n'
        result = await asyncio.to_thread(manage, *args, stdin=batch)
    else:
        result = await asyncio.to_thread(manage, *args)
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(error_lines) == 1
    for i in (0, 1):
        await nothing_arrives(nodes[i], channels[i], 0.1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--watch", "-1"], "must be a number from 0.1"),
        (["--watch", "nan"], "must be a number from 0.1"),
        (["--watch", "inf"], "must be a number from 0.1"),
        (["--watch", "0"], "must be a number from 0.1"),
        (["--watch", "1e999"], "must be a number from 0.1"),
        (["--watch", "soon"], "a number is needed"),
        (["--limit", "0"], "must be an integer from 1 to 1000"),
        (["--limit", "1001"], "must be an integer from 1 to 1000"),
        (["--limit", "2.5"], "an integer is needed"),
        (["--match", "*" * 40], "more than 32 wildcards"),
        (["--match", "room name"], "can never be in a room name"),
        (["room42\n"], "Group name must be a valid"),
    ],
)
def test_rooms_flags_are_checked_in_one_line(args, message):
    with pytest.raises(CommandError, match=message) as caught:
        call_command("rooms", *args, stdout=StringIO())
    assert "\n" not in str(caught.value)


@pytest.fixture
def stdin(monkeypatch):
    """Replace standard input with text (or bytes, read through a real text wrapper)."""

    def feed(data: str | bytes) -> None:
        if isinstance(data, bytes):
            monkeypatch.setattr(sys, "stdin", TextIOWrapper(BytesIO(data)))
        else:
            monkeypatch.setattr(sys, "stdin", StringIO(data))

    return feed


@pytest.mark.parametrize(
    ("lines", "json_lines", "message"),
    [
        (
            "one\ntwo\n" + "x" * 5_000_000 + "\nfour\n",
            False,
            "line 3: longer than max_message_size",
        ),
        ('{"n": 1}\n\n{"n": 3\n', True, "line 3 is not valid JSON"),
        ('{"n": 1}\n[1]\n', True, "line 2 must be a JSON object"),
        ('{"n": 1}\n{"type": "websocket.send"}\n', True, "line 2: 'websocket.send' is an ASGI"),
        ('{"n": 1}\n{"x": ' + "[" * 40 + "]" * 40 + "}\n", True, "line 2 nests containers"),
        (b"one\n\xff\xfe\n", False, "line 2: not UTF-8 text"),
    ],
)
async def test_a_bad_line_in_a_stdin_batch_sends_nothing(nodes, stdin, lines, json_lines, message):
    channels = await members_on_two_nodes(nodes)
    stdin(lines)
    body = {"json_body": "-"} if json_lines else {}
    with pytest.raises(CommandError, match=message) as caught:
        await asyncio.to_thread(call_command, "broadcast", "room42", stdin=True, **body,
                                stdout=StringIO())  # fmt: skip
    assert "\n" not in str(caught.value)
    for i in (0, 1):
        await nothing_arrives(nodes[i], channels[i], 0.1)


async def test_stream_sends_the_lines_before_a_bad_one(nodes, stdin):
    channel = (await members_on_two_nodes(nodes))[0]
    stdin('{"n": 1}\n{"n": 2}\n{"type": "bad!type"}\n{"n": 4}\n')
    with pytest.raises(CommandError, match="line 3"):
        await asyncio.to_thread(call_command, "broadcast", "room42", "--stdin", "--stream",
                                json_body="-", stdout=StringIO())  # fmt: skip
    assert [(await within(nodes[0].receive(channel)))["n"] for _ in range(2)] == [1, 2]
    await nothing_arrives(nodes[0], channel)


async def test_a_stdin_batch_is_bounded(nodes, stdin, monkeypatch):
    from broadcast_layer.management.commands import broadcast

    channel = (await members_on_two_nodes(nodes))[0]
    monkeypatch.setattr(broadcast, "MAX_STDIN_LINES", 3)
    stdin("a\nb\nc\nd\n")
    with pytest.raises(CommandError, match="over 3 lines"):
        await asyncio.to_thread(call_command, "broadcast", "room42", "--stdin", stdout=StringIO())
    await nothing_arrives(nodes[0], channel)
    stdin("a\nb\nc\n")
    await asyncio.to_thread(call_command, "broadcast", "room42", "--stdin", stdout=StringIO())
    assert [(await within(nodes[0].receive(channel)))["text"] for _ in range(3)] == ["a", "b", "c"]


async def test_protocol_types_go_out_only_with_the_flag(nodes):
    channel = (await members_on_two_nodes(nodes))[0]
    body = '{"type": "websocket.receive", "text": "x"}'
    with pytest.raises(CommandError, match="--allow-protocol-type"):
        await asyncio.to_thread(call_command, "broadcast", "room42", json_body=body,
                                stdout=StringIO())  # fmt: skip
    await nothing_arrives(nodes[0], channel)
    await asyncio.to_thread(call_command, "broadcast", "room42", "hi", "--allow-protocol-type",
                            type="websocket.receive", stdout=StringIO())  # fmt: skip
    assert (await within(nodes[0].receive(channel)))["type"] == "websocket.receive"


async def test_redis_unreachable_is_a_one_line_error(manage):
    result = await asyncio.to_thread(
        manage, "broadcast", "room42", "hi", url="redis://127.0.0.1:1/0"
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("CommandError: Redis is unreachable")
    assert len(result.stderr.strip().splitlines()) == 1


def test_call_command_raises_command_error():
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("broadcast", "room42", json_body="{", stdout=StringIO())


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
    as_json = json.loads((await asyncio.to_thread(manage, "rooms", "--format", "json")).stdout)
    assert as_json["rooms"] == [
        {"name": "quiet-room", "size": 1, "nodes": 1},
        {"name": "room42", "size": 2, "nodes": 2},
    ]
    filtered = json.loads(
        (await asyncio.to_thread(manage, "rooms", "--format", "json", "--match", "q*")).stdout
    )
    assert [room["name"] for room in filtered["rooms"]] == ["quiet-room"]
    members = await asyncio.to_thread(manage, "rooms", "room42")
    assert channels[0] in members.stdout
    assert nodes[0].node_id in members.stdout
    assert '"name": "Ann"' in members.stdout
    member_json = json.loads(
        (await asyncio.to_thread(manage, "rooms", "room42", "--format", "json")).stdout
    )
    assert {m["channel"] for m in member_json["members"]} == set(channels)
    node_json = json.loads(
        (await asyncio.to_thread(manage, "rooms", "--nodes", "--format", "json")).stdout
    )
    assert {nodes[0].node_id, nodes[1].node_id} <= {n["id"] for n in node_json["nodes"]}


def _sigint_as_in_a_terminal() -> None:
    """A shell that runs the suite in the background (CI) passes SIGINT on ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_rooms_watch_refreshes_in_place(nodes, redis_url, prefix):
    await members_on_two_nodes(nodes)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "REDIS_URL": redis_url,
           "BROADCAST_TEST_PREFIX": prefix}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "manage.py", "rooms", "--watch", "0.1", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, preexec_fn=_sigint_as_in_a_terminal,
    )  # fmt: skip
    output = b""
    async with asyncio.timeout(20):
        while output.count(b"\x1b[H\x1b[2J") < 2:
            output += await process.stdout.read(4096)
    process.send_signal(2)  # Ctrl-C ends it quietly
    assert await within(process.wait(), 10) == 0
    assert b"room42" in output


# -- fuzzing the command lines --------------------------------------------------------

ROOM_ARGS = st.sampled_from(["room42", "room42\n", "bad name", "", "x" * 120, "chat.*", "-"])
TEXTS = st.one_of(st.text(max_size=20), st.sampled_from(["--", "-1", "nan"]))
VALUES = st.one_of(
    st.sampled_from(["-1", "0", "nan", "inf", "1e999", "2.5", "1001", "abc", "", "5", "50"]),
    st.text(max_size=10),
)
JSON_BODIES = st.sampled_from([
    '{"n": 1}', "{", "[1]", '{"type": "bad!type"}', '{"type": "websocket.receive"}',
    '{"type": 5}', "[" * 3000 + "]" * 3000, '{"x": ' + "[" * 40 + "]" * 40 + "}", "-", "null",
])  # fmt: skip
BROADCAST_PIECES = st.one_of(
    ROOM_ARGS.map(lambda a: [a]),
    TEXTS.map(lambda a: [a]),
    st.tuples(
        st.sampled_from(["--user", "--channel", "--format", "--output"]), VALUES | ROOM_ARGS
    ).map(list),
    st.tuples(st.just("--layer"), st.sampled_from(["default", "memory", "nope", ""])).map(list),
    st.tuples(
        st.just("--type"),
        st.sampled_from(["chat.message", "bad!type", "websocket.send", "_x", "a..b", ""]) | TEXTS,
    ).map(list),
    st.tuples(st.sampled_from(["--json-body", "--json"]), JSON_BODIES).map(list),
    st.sampled_from(
        ["--all", "--stdin", "--stream", "--quiet", "--allow-protocol-type", "--bogus"]
    ).map(lambda a: [a]),
)
ROOMS_PIECES = st.one_of(
    ROOM_ARGS.map(lambda a: [a]),
    st.tuples(st.sampled_from(["--limit", "--sort", "--match"]), VALUES | ROOM_ARGS).map(list),
    # Only values --watch refuses: a valid one would refresh until Ctrl-C.
    st.tuples(
        st.just("--watch"),
        st.sampled_from(["-1", "0", "nan", "inf", "1e999", "abc", "", "0.01", "86401"]),
    ).map(list),
    st.tuples(st.just("--format"), st.sampled_from(["json", "text", "yaml", ""])).map(list),
    st.sampled_from(["--nodes", "--json", "--bogus"]).map(lambda a: [a]),
)


@given(
    command=st.sampled_from(["broadcast", "rooms"]),
    broadcast=st.lists(BROADCAST_PIECES, max_size=6),
    rooms=st.lists(ROOMS_PIECES, max_size=5),
    stdin=st.text(max_size=200) | st.sampled_from(['{"n": 1}\n{"type": "bad!type"}\n']),
)
def test_no_command_line_gives_a_traceback(command, broadcast, rooms, stdin):
    argv = [token for piece in (broadcast if command == "broadcast" else rooms) for token in piece]
    with mock.patch.object(sys, "stdin", StringIO(stdin)):
        try:
            call_command(command, *argv, stdout=StringIO(), stderr=StringIO())
        except (CommandError, SystemExit) as exc:
            message = str(exc)
            assert message.strip(), argv
            assert "\n" not in message.strip(), (argv, message)
