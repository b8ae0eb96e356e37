"""Messages dropped at a full mailbox are counted and logged, at most one line per channel
per interval, each line with the count since the previous one."""

from __future__ import annotations

import logging

from broadcast_layer._node.drops import FullMailboxLog

from .conftest import eventually, within


def drop_lines(caplog, channel):
    return [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING and channel in record.getMessage()
    ]


async def test_a_full_mailbox_drop_is_counted_and_warned_once(make_layer, caplog):
    caplog.set_level(logging.WARNING, logger="broadcast_layer")
    layer = make_layer(channel_capacity={"slow.*": 1})
    channel = await layer.new_channel("slow")
    other = await layer.new_channel("fast")
    for member in (channel, other):
        await layer.group_add("firehose", member)
    for n in range(6):
        await layer.group_send("firehose", {"type": "m", "n": n})
    await eventually(lambda: layer.stats().dropped == 5)
    lines = drop_lines(caplog, channel)
    assert len(lines) == 1  # the other four drops wait for the next line
    assert lines[0].getMessage().startswith(f"Dropped 1 message for {channel}: its mailbox is full")
    assert not drop_lines(caplog, other)  # its capacity (100) was not reached
    assert (await within(layer.receive(channel)))["n"] == 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_with_the_count_since_the_last_line(caplog):
    caplog.set_level(logging.WARNING, logger="test.drops")
    clock = Clock()
    log = FullMailboxLog(logging.getLogger("test.drops"), interval=10, clock=clock)

    def messages():
        return [record.getMessage().split(":")[0] for record in caplog.records]

    for _ in range(5):
        log.record("a!1")
    log.record("b!2")
    assert messages() == ["Dropped 1 message for a!1", "Dropped 1 message for b!2"]
    clock.now = 9.9
    log.record("a!1")
    log.flush()  # nothing is due yet
    assert len(messages()) == 2
    clock.now = 10.0
    log.record("a!1")  # 4 + 1 held + this one
    assert messages()[-1] == "Dropped 6 messages for a!1"
    log.record("a!1")
    clock.now = 20.0
    log.flush()  # the burst's tail is reported without a further drop; b!2 is forgotten
    assert messages()[-1] == "Dropped 1 message for a!1"
    assert len(messages()) == 4
    log.record("b!2")  # forgotten, so logged at once
    assert messages()[-1] == "Dropped 1 message for b!2"
    clock.now = 40.0
    log.flush()  # logs nothing: a!1 and b!2 were quiet, and are forgotten
    assert len(messages()) == 5
    log.record("a!1")
    assert messages()[-1] == "Dropped 1 message for a!1"
