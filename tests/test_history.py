"""History groups: offsets and epochs, pages, trimming by size and ttl, gapless delivery."""

from __future__ import annotations

import asyncio
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from broadcast_layer import (
    ConfigurationError,
    Emitter,
    HistoryNotEnabled,
    InvalidHistoryQuery,
    InvalidMessage,
)
from broadcast_layer.layer import BroadcastChannelLayer

from . import faults
from .conftest import eventually, on_both, within

HISTORY = {"chat.*": {"size": 1000, "ttl": 3600}}


@pytest.fixture
async def chat(make_layer):
    """Two nodes with the same history config, and a member on the second."""
    sender, member = make_layer(history=HISTORY), make_layer(history=HISTORY)
    channel = await member.new_channel()
    await member.group_add("chat.room", channel)
    return sender, member, channel


async def test_delivered_messages_carry_growing_offsets_and_one_epoch(chat):
    sender, member, channel = chat
    for n in range(3):
        assert await sender.group_send("chat.room", {"type": "m", "n": n}) == 1
    received = [await within(member.receive(channel)) for _ in range(3)]
    assert [m["history"]["offset"] for m in received] == [1, 2, 3]
    assert len({m["history"]["epoch"] for m in received}) == 1
    assert [m["n"] for m in received] == [0, 1, 2]


async def test_group_history_pages_oldest_first(chat):
    sender, _, _ = chat
    for n in range(10):
        await sender.group_send("chat.room", {"type": "m", "n": n})
    latest = await sender.group_history("chat.room", limit=3)
    assert latest.complete
    assert latest.top == 10
    assert not latest.more
    assert [m.offset for m in latest.messages] == [8, 9, 10]
    assert [m.message["n"] for m in latest.messages] == [7, 8, 9]
    assert latest.messages[0].message["history"] == {"offset": 8, "epoch": latest.epoch}
    page = await sender.group_history("chat.room", since=2, epoch=latest.epoch, limit=4)
    assert page.complete
    assert page.more
    assert [m.offset for m in page.messages] == [3, 4, 5, 6]
    rest = await sender.group_history("chat.room", since=6, epoch=latest.epoch)
    assert [m.offset for m in rest.messages] == [7, 8, 9, 10]
    assert not rest.more
    caught_up = await sender.group_history("chat.room", since=10, epoch=latest.epoch)
    assert caught_up.complete
    assert caught_up.messages == ()


async def test_a_group_without_messages_has_an_epoch_the_next_send_keeps(make_layer):
    layer = make_layer(history=HISTORY)
    empty = await layer.group_history("chat.new")
    assert empty.complete
    assert empty.messages == ()
    assert empty.top == 0
    await layer.group_send("chat.new", {"type": "m"})
    page = await layer.group_history("chat.new", since=0, epoch=empty.epoch)
    assert page.complete
    assert page.epoch == empty.epoch
    assert [m.offset for m in page.messages] == [1]


async def test_trimmed_history_is_never_silently_partial(make_layer):
    layer = make_layer(history={"chat.*": {"size": 10, "ttl": 3600}})
    for n in range(400):
        await layer.group_send("chat.big", {"type": "m", "n": n})
    latest = await layer.group_history("chat.big", limit=1000)
    # MAXLEN ~ trims whole stream nodes: at least `size` messages stay, far from all.
    assert 10 <= len(latest.messages) < 400
    assert [m.offset for m in latest.messages] == list(range(401 - len(latest.messages), 401))
    old = await layer.group_history("chat.big", since=5, epoch=latest.epoch)
    assert not old.complete
    recent = await layer.group_history("chat.big", since=395, epoch=latest.epoch)
    assert recent.complete
    assert [m.offset for m in recent.messages] == [396, 397, 398, 399, 400]


async def test_history_expires_after_ttl_and_comes_back_with_a_new_epoch(
    make_layer, redis_client, prefix
):
    layer = make_layer(history={"chat.*": {"size": 10, "ttl": 0.3}})
    await layer.group_send("chat.short", {"type": "m"})
    before = await layer.group_history("chat.short")
    assert [m.offset for m in before.messages] == [1]
    keys = [f"{prefix}:history:{{chat.short}}", f"{prefix}:history:{{chat.short}}:meta"]
    await eventually(lambda: redis_client.exists(*keys) == 0, seconds=10)
    await layer.group_send("chat.short", {"type": "m"})
    after = await layer.group_history("chat.short", since=1, epoch=before.epoch)
    assert after.epoch != before.epoch
    assert not after.complete
    assert [m.offset for m in after.messages] == [1]


async def test_data_loss_gives_a_new_epoch_and_recovery_says_it_cannot(chat, redis_url):
    sender, member, channel = chat
    await sender.group_send("chat.room", {"type": "m"})
    first = await within(member.receive(channel))
    faults.flushall(redis_url)
    await sender.group_send("chat.room", {"type": "m"})
    second = await within(member.receive(channel))
    assert second["history"]["offset"] == 1
    assert second["history"]["epoch"] != first["history"]["epoch"]
    page = await sender.group_history("chat.room", since=1, epoch=first["history"]["epoch"])
    assert not page.complete
    assert page.epoch == second["history"]["epoch"]


async def test_the_append_and_the_publish_are_one_script(make_layer, redis_client, prefix):
    layer = make_layer(history=HISTORY)
    listener = redis_client.pubsub()
    listener.subscribe(f"{prefix}:group:chat.raw")
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    before = redis_client.info("commandstats")
    await layer.group_send("chat.raw", {"type": "m"})
    after = redis_client.info("commandstats")
    frame = listener.get_message(timeout=5)["data"]
    listener.close()
    assert frame.startswith(b"~1 ")  # the offset, then the epoch, then the payload
    called = {name for name in after if after[name]["calls"] != before.get(name, {}).get("calls")}
    assert {"cmdstat_xadd", "cmdstat_publish"} <= called
    assert "cmdstat_evalsha" in called
    assert "cmdstat_eval" not in called
    assert redis_client.xlen(f"{prefix}:history:{{chat.raw}}") == 1


async def test_plain_groups_are_unchanged(make_layer, redis_client, prefix):
    sender, member = make_layer(history=HISTORY), make_layer(history=HISTORY)
    channel = await member.new_channel()
    await member.group_add("lobby", channel)
    await sender.group_send("lobby", {"type": "m", "history": "mine"})
    assert await within(member.receive(channel)) == {"type": "m", "history": "mine"}
    assert redis_client.keys(f"{prefix}:history:*") == []
    with pytest.raises(HistoryNotEnabled):
        await sender.group_history("lobby")


async def test_bad_input_gets_clear_exceptions_and_sends_nothing(make_layer, redis_client, prefix):
    layer = make_layer(history=HISTORY)
    with pytest.raises(InvalidMessage, match="reserved"):
        await layer.group_send("chat.x", {"type": "m", "history": 1})
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": True}, {"since": -1}, {"since": "3"}):
        with pytest.raises(InvalidHistoryQuery):
            await layer.group_history("chat.x", **bad)
    assert redis_client.keys(f"{prefix}:history:*") == []


@pytest.mark.parametrize(
    "history",
    [
        "chat.*",
        {"chat.*": 5},
        {"chat.*": {"size": 10}},
        {"chat.*": {"size": 10, "ttl": 1, "extra": 1}},
        {"chat.*": {"size": 0, "ttl": 1}},
        {"chat.*": {"size": 100_001, "ttl": 1}},
        {"chat.*": {"size": 1.5, "ttl": 1}},
        {"chat.*": {"size": 10, "ttl": 0}},
        {"chat.*": {"size": 10, "ttl": 31 * 86400}},
        {"chat.[": {"size": 10, "ttl": 1}},
        {f"g{n}.*": {"size": 1, "ttl": 1} for n in range(101)},
    ],
)
def test_bad_history_config_names_the_key(history):
    with pytest.raises(ConfigurationError, match="history"):
        BroadcastChannelLayer(history=history)


def test_the_first_matching_glob_decides():
    layer = BroadcastChannelLayer(
        history={"chat.vip*": {"size": 5, "ttl": 1}, "chat.*": {"size": 50, "ttl": 2}}
    )
    assert layer.config.history_for("chat.vip1").size == 5
    assert layer.config.history_for("chat.a").size == 50
    assert layer.config.history_for("chat") is None


async def test_the_sync_facade_reads_the_same_page(make_layer):
    layer = make_layer(history=HISTORY, symmetric_encryption_keys=["k"], expiry=1)
    await layer.group_send("chat.sync", {"type": "m", "n": 1})
    page = await asyncio.to_thread(layer.sync_group_history, "chat.sync")
    assert [(m.offset, m.message["n"]) for m in page.messages] == [(1, 1)]
    assert page == await layer.group_history("chat.sync")


@pytest.mark.slow
@on_both
async def test_gapless_delivery_across_killed_pubsub_connections(make_layer, deployment):
    """A steady send while every pub/sub connection is killed again and again (on a
    cluster, every sharded one on every master): every member gets every message
    exactly once, in order."""
    total = 600
    sender = make_layer(history=HISTORY)
    # The default capacity: a catch-up of seconds of messages (when a resubscribe is
    # slow) is more than a mailbox holds, and waits for the members (back-pressure).
    members = [make_layer(history=HISTORY) for _ in range(2)]
    channels = []
    for member in members:
        for _ in range(2):
            channel = await member.new_channel()
            await member.group_add("chat.steady", channel)
            channels.append((member, channel))
    received: dict[str, list[int]] = {channel: [] for _, channel in channels}
    sent: list[int] = []

    async def send() -> None:
        for n in range(total):
            await sender.group_send("chat.steady", {"type": "m", "n": n})
            sent.append(n)
            await asyncio.sleep(0.002)

    async def receive(layer: BroadcastChannelLayer, channel: str) -> None:
        while len(received[channel]) < total:
            message = await layer.receive(channel)
            received[channel].append(message["n"])

    def kill_everywhere() -> int:
        return faults.kill_everywhere(deployment.masters(), "pubsub")

    async def kill() -> int:
        kills = 0
        while len(sent) < total - 100:  # the last 100 are sent without a fault
            await asyncio.sleep(0.1)
            kills += await asyncio.to_thread(kill_everywhere)
        return kills

    readers = [asyncio.create_task(receive(layer, channel)) for layer, channel in channels]
    async with asyncio.timeout(90):
        _, kills = await asyncio.gather(send(), kill())
    # A lost message would keep its reader waiting: bound the wait, then tally.
    await asyncio.wait(readers, timeout=30)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    assert kills >= 5
    assert sum(member.stats().reconnects for member in members) >= 5
    for channel, numbers in received.items():
        tally = faults.tally(sent, numbers)
        assert (tally.lost, tally.duplicated, tally.reordered) == (0, 0, 0), (channel, tally)


async def deliver_then_lose_one(chat, redis_client, prefix: str) -> str:
    """Deliver message 0 of "chat.room" (offset 1), then append message 1 (offset 2)
    without publishing it, as if its pub/sub message were lost; return the stream's key."""
    sender, member, channel = chat
    await sender.group_send("chat.room", {"type": "m", "n": 0})
    await within(member.receive(channel))
    stream = f"{prefix}:history:{{chat.room}}"
    data = sender.encode({"type": "m", "n": 1})
    assert faults.append_unpublished(redis_client, stream, f"{stream}:meta", data) == 2
    return stream


async def test_a_gap_seen_live_is_filled_from_the_stream(chat, redis_client, prefix):
    """A message that bypassed pub/sub (published straight into the stream) is read back
    when the next live one shows the gap, and delivered before it."""
    sender, member, channel = chat
    await deliver_then_lose_one(chat, redis_client, prefix)
    await sender.group_send("chat.room", {"type": "m", "n": 2})
    got = [await within(member.receive(channel)) for _ in range(2)]
    assert [(m["n"], m["history"]["offset"]) for m in got] == [(1, 2), (2, 3)]


async def test_a_gap_the_stream_no_longer_keeps_is_counted_not_hidden(chat, redis_client, prefix):
    """A live message shows a gap the stream has trimmed away: the node reads once, says
    so (``stats().unrecovered``, and its log) and delivers the live message, whose
    offset shows the jump."""
    sender, member, channel = chat
    stream = await deliver_then_lose_one(chat, redis_client, prefix)
    redis_client.xtrim(stream, minid="0-3")  # offsets 1 and 2 trimmed, as by size
    await sender.group_send("chat.room", {"type": "m", "n": 2})
    got = await within(member.receive(channel))
    assert (got["n"], got["history"]["offset"]) == (2, 3)
    stats = member.stats()
    assert (stats.history_reads, stats.unrecovered) == (1, 1)


async def test_the_emitter_appends_to_history_groups(make_layer, settings, redis_url, prefix):
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
        "CONFIG": {"hosts": [redis_url], "prefix": prefix, "history": HISTORY},
    }}  # fmt: skip
    member = make_layer(history=HISTORY)
    channel = await member.new_channel()
    await member.group_add("chat.emitted", channel)
    emitter = await asyncio.to_thread(Emitter)
    try:
        result = await asyncio.to_thread(emitter.group, "chat.emitted", {"type": "m"})
        with pytest.raises(InvalidMessage, match="reserved"):
            emitter.group("chat.emitted", {"type": "m", "history": 0})
    finally:
        emitter.close()
    assert result.nodes == 1
    assert (await within(member.receive(channel)))["history"]["offset"] == 1


async def test_manage_rooms_history_shows_a_rooms_messages(make_layer, settings, redis_url, prefix):
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
        "CONFIG": {"hosts": [redis_url], "prefix": prefix, "history": HISTORY},
    }}  # fmt: skip
    layer = make_layer(history=HISTORY)
    for n in range(5):
        await layer.group_send("chat.cmd", {"type": "m", "text": f"line {n}"})

    def rooms(*args: str) -> str:
        out = StringIO()
        call_command("rooms", *args, stdout=out)
        return out.getvalue()

    table = await asyncio.to_thread(rooms, "chat.cmd", "--history", "--since", "3")
    assert "line 3" in table
    assert "line 4" in table
    assert "line 2" not in table
    data = json.loads(await asyncio.to_thread(rooms, "chat.cmd", "--history", "--format", "json"))
    assert [m["offset"] for m in data["messages"]] == [1, 2, 3, 4, 5]
    assert data["complete"]
    refused = [(("--history",), "need a ROOM"), (("chat.cmd", "--since", "1"), "goes with"),
               (("lobby", "--history"), "matches no glob")]  # fmt: skip
    for args, message in refused:
        with pytest.raises(CommandError, match=message):
            await asyncio.to_thread(rooms, *args)
