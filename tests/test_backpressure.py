"""Back-pressure on group delivery: a burst larger than the capacity reaches members whose
consumers keep draining, and only a member that stops draining loses messages.

The bursts are sent as concurrent ``group_send`` calls, which the publisher writes as
one pipeline: Redis then pushes the whole burst to the receiving node's pub/sub socket at
once, and its reader finds it all in one read, as under a real burst.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis

from broadcast_layer import BroadcastChannelLayer

from .conftest import eventually, on_both, within
from .faults import tally


async def send_burst(sender: BroadcastChannelLayer, group: str, numbers: range) -> None:
    """Every message of the burst at once: one pipeline of PUBLISH commands."""
    await within(
        asyncio.gather(*(sender.group_send(group, {"type": "m", "n": n}) for n in numbers)),
        30,
    )


class Members:
    """Consumers that receive in a loop and yield to the event loop after each message,
    as a Channels consumer's dispatch does."""

    def __init__(self, layer: BroadcastChannelLayer, channels: list[str]) -> None:
        self.layer = layer
        self.received: dict[str, list[int]] = {channel: [] for channel in channels}
        self.arrived = asyncio.Event()
        self.tasks = [asyncio.create_task(self._drain(channel)) for channel in channels]

    async def _drain(self, channel: str) -> None:
        numbers = self.received[channel]
        while True:
            message: dict[str, Any] = await self.layer.receive(channel)
            numbers.append(message["n"])
            self.arrived.set()
            await asyncio.sleep(0)

    def count(self) -> int:
        return sum(len(numbers) for numbers in self.received.values())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def joined(layer: BroadcastChannelLayer, group: str, count: int) -> list[str]:
    channels = [await layer.new_channel() for _ in range(count)]
    for channel in channels:
        await layer.group_add(group, channel)
    return channels


def drop_warnings(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.getMessage().startswith("Dropped")]  # fmt: skip


@on_both
async def test_a_burst_larger_than_the_capacity_reaches_every_draining_member(make_layer, caplog):
    """On a cluster, each master's sharded pub/sub reader waits the same way."""
    caplog.set_level(logging.WARNING, logger="broadcast_layer")
    receiver, sender = make_layer(capacity=10), make_layer()
    channels = await joined(receiver, "burst", 50)
    members = Members(receiver, channels)
    burst = range(200)  # 20 times the capacity, to 50 members
    try:
        await send_burst(sender, "burst", burst)
        # Until everything arrived, or something was dropped (a failure: stop at once).
        expected = len(burst) * len(channels)
        await eventually(lambda: members.count() == expected or receiver.stats().dropped, 30)
    finally:
        await members.stop()
    assert receiver.stats().dropped == 0
    for channel in channels:
        assert tally(burst, members.received[channel]) == tally(burst, list(burst))
    assert not drop_warnings(caplog)


async def test_a_history_catch_up_larger_than_the_capacity_waits_for_the_members(
    make_layer, redis_url, prefix
):
    """A gap of 100 messages read back from a history group's stream is delivered into
    mailboxes of 10 by waiting for the members; live messages that arrive meanwhile are
    held and follow in order."""
    history = {"chat.*": {"size": 1000, "ttl": 60}}
    receiver, sender = make_layer(capacity=10, history=history), make_layer(history=history)
    channels = await joined(receiver, "chat.room", 20)
    members = Members(receiver, channels)
    try:
        await sender.group_send("chat.room", {"type": "m", "n": 0})
        await eventually(lambda: members.count() == len(channels))
        client = redis.Redis.from_url(redis_url)
        try:  # offsets 2 to 101 go straight into the stream, as if pub/sub had lost them
            for n in range(1, 101):
                client.hincrby(f"{prefix}:history:{{chat.room}}:meta", "top", 1)
                client.xadd(f"{prefix}:history:{{chat.room}}", {"m": sender.encode(
                    {"type": "m", "n": n})}, id=f"0-{n + 1}")  # fmt: skip
        finally:
            client.close()
        for n in range(101, 131):  # the first shows the gap; the others wait behind it
            await sender.group_send("chat.room", {"type": "m", "n": n})
        expected = 131 * len(channels)
        await eventually(lambda: members.count() == expected or receiver.stats().dropped, 30)
    finally:
        await members.stop()
    assert receiver.stats().dropped == 0
    for channel in channels:
        assert tally(range(131), members.received[channel]) == tally(range(131), list(range(131)))


async def test_a_stalled_member_loses_its_copies_and_the_others_get_everything(make_layer, caplog):
    caplog.set_level(logging.WARNING, logger="broadcast_layer")
    receiver, sender = make_layer(capacity=10), make_layer()
    channels = await joined(receiver, "burst", 20)
    stalled = await receiver.new_channel()
    await receiver.group_add("burst", stalled)
    members = Members(receiver, channels)  # nobody receives on `stalled`
    burst = range(60)
    try:
        await send_burst(sender, "burst", burst)
        # Its mailbox took the first 10; the other 50 were dropped for it alone.
        await eventually(lambda: receiver.stats().dropped >= 50, 30)
        expected = len(burst) * len(channels)
        await eventually(lambda: members.count() == expected or receiver.stats().dropped > 50, 30)
        assert receiver.stats().dropped == 50
        lines = drop_warnings(caplog)
        assert lines
        assert all(stalled in line for line in lines)
        for channel in channels:
            assert tally(burst, members.received[channel]).lost == 0

        # Its consumer comes back: the 10 it kept, then (caught up) everything again.
        got = [(await within(receiver.receive(stalled)))["n"] for _ in range(10)]
        assert got == list(range(10))
        second = range(100, 130)
        await send_burst(sender, "burst", second)
        again = [(await within(receiver.receive(stalled), 30))["n"] for _ in second]
        assert again == list(second)
        assert receiver.stats().dropped == 50
    finally:
        await members.stop()


async def test_the_node_stays_healthy_while_a_member_is_stalled(make_layer):
    receiver, sender = make_layer(capacity=5), make_layer()
    channels = await joined(receiver, "burst", 10)
    stalled = await receiver.new_channel()
    await receiver.group_add("burst", stalled)
    members = Members(receiver, channels)
    try:
        # A probe sent with the burst waits behind it in the socket, for at most the
        # stall bound (1 s): answered, whatever the machine's load.
        probe = asyncio.create_task(receiver.health(timeout=30))
        await send_burst(sender, "burst", range(50))
        assert (await within(probe, 30)).ok
        await eventually(lambda: receiver.stats().dropped >= 45, 30)
        assert receiver.stats().dropped == 45  # the stalled member's, and only those
        # Stalled, the member no longer holds the reader: traffic and probes flow.
        for n in range(50, 100, 10):
            await send_burst(sender, "burst", range(n, n + 10))
            health = await receiver.health()
            assert health.ok, health.error
        await eventually(lambda: members.count() == 100 * len(channels), 30)
        assert receiver.stats().dropped == 45 + 50
    finally:
        await members.stop()


async def test_a_burst_reaches_every_member_of_a_node_in_another_process(
    make_layer, node_processes
):
    node = await asyncio.to_thread(node_processes, env={"CAPACITY": "10"})

    def join(count: int) -> list[str]:
        channels = [node.ask(op="new_channel")["channel"] for _ in range(count)]
        for channel in channels:
            node.ask(op="group_add", group="burst", channel=channel)
            node.ask(op="collect", channel=channel)
        return channels

    channels = await asyncio.to_thread(join, 40)
    burst = range(300)
    await send_burst(make_layer(), "burst", burst)

    async def settled() -> bool:
        report = await asyncio.to_thread(node.ask, op="report")
        arrived = sum(map(len, report["received"].values()))
        return arrived == len(burst) * len(channels) or report["dropped"] > 0

    await eventually(settled, 30)
    report = await asyncio.to_thread(node.ask, op="report")
    assert report["dropped"] == 0
    received = report["received"]
    for channel in channels:
        assert tally(burst, received[channel]) == tally(burst, list(burst))
