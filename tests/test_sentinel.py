"""Sentinel hosts: waiting out a missing master, missed announcements, a clean close.

Each test runs a real master, replica and three sentinels (``tests/sentinel.py``); the
traffic scenarios are in ``test_sentinel_failover.py``.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from broadcast_layer import RedisUnavailable
from broadcast_layer._protocol.keys import Keys
from broadcast_layer._redis.sentinel import CHECK_INTERVAL
from broadcast_layer.layer import BroadcastChannelLayer

from . import faults
from .conftest import eventually, within
from .sentinel import MASTER_NAME, SentinelDeployment, sentinels_fixture  # noqa: F401

pytestmark = pytest.mark.slow


def _prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


async def test_calls_wait_for_a_master_then_raise_after_failover_timeout(
    sentinels: SentinelDeployment,
) -> None:
    """With no master at all, a call waits up to failover_timeout, then raises; a call
    still waiting when the master is back succeeds."""
    prefix = _prefix()
    impatient = BroadcastChannelLayer(hosts=[sentinels.host()], prefix=prefix, failover_timeout=1.0)
    patient = BroadcastChannelLayer(hosts=[sentinels.host()], prefix=prefix, failover_timeout=60)
    member = BroadcastChannelLayer(hosts=[sentinels.host()], prefix=prefix, failover_timeout=60)
    try:
        channel = await member.new_channel()
        await member.group_add("room", channel)
        await impatient.group_send("room", {"type": "before"})
        await patient.group_send("room", {"type": "before"})
        assert (await within(member.receive(channel)))["type"] == "before"
        assert (await within(member.receive(channel)))["type"] == "before"

        master = sentinels.master()
        # No replica left to promote: the master is gone until it is started again.
        # (In a thread: a crash happens while the loop runs.)
        await asyncio.to_thread(faults.sigkill, sentinels.replica().process)
        await asyncio.to_thread(faults.sigkill, master.process)

        with pytest.raises(RedisUnavailable, match="failover_timeout"):
            await within(impatient.group_send("room", {"type": "lost"}), 30)

        waiting = asyncio.create_task(patient.group_send("room", {"type": "after"}))
        joining = asyncio.create_task(member.group_add("other-room", channel))
        await asyncio.sleep(1.5)  # an outage long enough for calls to hit it
        assert not waiting.done()
        assert not joining.done()
        await asyncio.to_thread(sentinels.restart, master)
        # Both return once the master is back. (Whether "after" reached the member
        # depends on which node reconnected first: pub/sub keeps nothing for a
        # subscriber that is away.)
        assert await within(waiting, 30) in (0, 1)
        await within(joining, 30)  # returns subscribed, as always
        assert "other-room" in member.stats().groups
        await patient.group_send("other-room", {"type": "joined"})
        while (message := await within(member.receive(channel)))["type"] == "after":
            pass
        assert message["type"] == "joined"
    finally:
        for layer in (impatient, patient, member):
            await layer.close()


async def test_a_missed_switch_announcement_is_caught_by_the_periodic_check(
    sentinels: SentinelDeployment,
) -> None:
    """A node listening to a sentinel that never announces the switch still follows it."""
    idle = sentinels.start_idle_sentinel()  # listed first: the node listens to it
    host = sentinels.host()
    host["sentinels"] = [idle.address, *host["sentinels"]]
    prefix = _prefix()
    member = BroadcastChannelLayer(hosts=[host], prefix=prefix)
    try:
        channel = await member.new_channel()
        await member.group_add("room", channel)
        old = sentinels.master()
        await asyncio.to_thread(faults.sentinel_failover, sentinels.sentinels[0].port, MASTER_NAME)
        await eventually(lambda: sentinels.master() is not old, 30)
        new = sentinels.master()
        group_channel = Keys(prefix).group_channel("room")

        def subscribed_on_new_master() -> bool:
            client = redis.Redis(port=new.port)
            try:
                return bool(client.pubsub_numsub(group_channel)[0][1])
            finally:
                client.close()

        # The old master stays up (and master) for ~10 s until Sentinel demotes it:
        # only the periodic check can move the node before that.
        await eventually(subscribed_on_new_master, CHECK_INTERVAL + 3)
        sender = BroadcastChannelLayer(hosts=[sentinels.host()], prefix=prefix)
        try:
            await sender.group_send("room", {"type": "after"})
        finally:
            await sender.close()
        assert (await within(member.receive(channel)))["type"] == "after"
        assert member.stats().reconnects >= 1
    finally:
        await member.close()


async def test_close_leaves_no_task_behind(sentinels: SentinelDeployment) -> None:
    layer = BroadcastChannelLayer(hosts=[sentinels.host()], prefix=_prefix())
    before = asyncio.all_tasks()
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.group_send("g", {"type": "m"})
    assert await within(layer.receive(channel)) == {"type": "m"}
    await layer.close()
    await layer.close()  # idempotent
    assert asyncio.all_tasks() == before
