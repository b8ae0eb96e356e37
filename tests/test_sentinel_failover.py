"""Sentinel failover during traffic: the layer follows ``+switch-master`` at once.

A real master, a replica and three sentinels (``tests/sentinel.py``). A sender publishes
numbered messages at a steady rate to a group with members on two layer instances; then
the master is failed over (``SENTINEL FAILOVER``) or killed (``SIGKILL``). Each member's
stream is tallied: no duplicate or reordering ever, and nothing lost outside the window
from the fault until the members have followed the switch. A process that connects after
the switch delivers everything, and the registry equals the nodes' state afterwards.

Run ``pytest tests/test_sentinel_failover.py -p no:randomly -s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from broadcast_layer import RedisUnavailable
from broadcast_layer._protocol.keys import Keys
from broadcast_layer.layer import BroadcastChannelLayer

from . import faults
from .conftest import eventually
from .sentinel import MASTER_NAME, SentinelDeployment, SwitchClock, sentinels_fixture  # noqa: F401

pytestmark = pytest.mark.slow

GROUP = "failover-room"
RATE = 200  # group_send per second
#: "The members follow the new master within about a second of its announcement"
#: (measured: 0.04 s after SENTINEL FAILOVER, 0.10 s after SIGKILL of the master); the
#: half second over it is room for a loaded machine, not for a slower design.
RESUME_BOUND = 1.5
#: A message Redis published just before it died can still be in its output buffer or
#: in the node's socket when the connection resets: pub/sub is at most once, so the
#: loss window opens this long before the fault.
IN_FLIGHT_SLACK = 0.05
LAYER_OPTIONS: dict[str, Any] = {"failover_timeout": 10.0}


@dataclass
class Member:
    """One member channel and the numbers it received, per stream."""

    layer: BroadcastChannelLayer
    channel: str
    got: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            self.got.setdefault(message["src"], []).append((message["n"], time.monotonic()))

    def numbers(self, src: str) -> list[int]:
        return [n for n, _ in self.got.get(src, [])]


@dataclass
class Sender:
    """Sends numbered messages at ``RATE`` per second; records when each send began."""

    layer: BroadcastChannelLayer
    src: str
    sent: dict[int, float] = field(default_factory=dict)
    errors: list[tuple[float, str]] = field(default_factory=list)
    slowest: float = 0.0

    async def run(self, stop: asyncio.Event | None = None, count: int | None = None) -> None:
        """Send until ``stop`` is set (not cancelled: redis-py can swallow a cancellation)."""
        start = time.monotonic()
        for n in itertools.count() if count is None else range(count):
            if stop is not None and stop.is_set():
                return
            # Paced to the clock, but never in a burst: a send delayed by the outage
            # pushes the schedule back rather than being followed by a catch-up flood.
            start = max(start + 1 / RATE, time.monotonic())
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            began = time.monotonic()
            try:
                await self.layer.group_send(GROUP, {"type": "m", "src": self.src, "n": n})
            except RedisUnavailable as exc:
                self.errors.append((began, repr(exc)))
                continue
            self.sent[n] = began
            self.slowest = max(self.slowest, time.monotonic() - began)


def _layer(sentinels: SentinelDeployment, prefix: str) -> BroadcastChannelLayer:
    return BroadcastChannelLayer(hosts=[sentinels.host()], prefix=prefix, **LAYER_OPTIONS)


async def _join(layer: BroadcastChannelLayer, tasks: list[asyncio.Task[Any]]) -> Member:
    member = Member(layer, await layer.new_channel())
    await layer.group_add(GROUP, member.channel)
    tasks.append(asyncio.create_task(member.run()))
    return member


def _subscribers(port: int, channel: str) -> int:
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        return int(client.pubsub_numsub(channel)[0][1])
    except redis.ConnectionError:
        return 0
    finally:
        client.close()


def _gap(member: Member, src: str, around: float) -> float:
    """The longest silence in what ``member`` received from ``src`` (arrival times)."""
    times = sorted(t for _, t in member.got.get(src, []))
    gaps = [b - a for a, b in itertools.pairwise(times) if b > around - 1]
    return max(gaps, default=0.0)


async def _failover_during_traffic(
    sentinels: SentinelDeployment, prefix: str, fault: Callable[[], None]
) -> dict[str, Any]:
    async with asyncio.timeout(90):  # a hang fails the test, and the clean-up still runs
        return await _scenario(sentinels, prefix, fault)


async def _scenario(
    sentinels: SentinelDeployment, prefix: str, fault: Callable[[], None]
) -> dict[str, Any]:
    nodes = [_layer(sentinels, prefix) for _ in range(2)]
    sender_layer = _layer(sentinels, prefix)
    late_layer: BroadcastChannelLayer | None = None
    tasks: list[asyncio.Task[Any]] = []
    group_channel = Keys(prefix).group_channel(GROUP)
    try:
        members = [await _join(node, tasks) for node in nodes for _ in range(2)]
        sender = Sender(sender_layer, "steady")
        stop = asyncio.Event()
        sending = asyncio.create_task(sender.run(stop))
        tasks.append(sending)
        await eventually(lambda: all(m.numbers("steady") for m in members), 10)
        await asyncio.sleep(1.0)  # steady traffic before the fault

        # Members keep joining through the fault: joins the old master took after the
        # replica was promoted are lost with it unless the nodes re-assert them.
        churning = asyncio.Event()
        churned: list[Member] = []

        async def churn(node: BroadcastChannelLayer) -> None:
            while not churning.is_set():
                churned.append(await _join(node, tasks))
                await asyncio.sleep(0.1)

        churners = [asyncio.create_task(churn(node)) for node in nodes]
        async with SwitchClock(sentinels) as clock:
            fault_at = time.monotonic()
            await asyncio.to_thread(fault)
            fault_done_at = time.monotonic()
            switched_at, (_, new_port) = await clock.switched()

        async def followed() -> float:
            # Both member nodes subscribed on the new master: they followed the switch.
            await eventually(
                lambda: _subscribers(new_port, group_channel) == len(nodes),
                switched_at + RESUME_BOUND - time.monotonic(),
            )
            return time.monotonic()

        resubscribed = asyncio.create_task(followed())
        tasks.append(resubscribed)
        # Members that join right after the switch, before anyone may have followed it.
        members += [await _join(node, tasks) for node in nodes]
        churning.set()
        await asyncio.wait_for(asyncio.gather(*churners), 30)
        members += churned
        resubscribed_at = await resubscribed

        # A process that connects after the switch: everything it sends is delivered.
        late_layer = _layer(sentinels, prefix)
        late = Sender(late_layer, "late")
        await asyncio.wait_for(late.run(count=100), 30)

        await asyncio.sleep(1.0)  # steady traffic after the members resubscribed
        stop.set()
        await asyncio.wait_for(sending, 30)
        stopped_at = time.monotonic()
        last = max(sender.sent)
        await eventually(lambda: all(last in m.numbers("steady") for m in members[:4]), 10)

        # The registry equals the nodes' own state, late joiners included.
        local = set().union(*(node.local_members(GROUP) for node in nodes))

        listed: set[str] = set()

        async def registry_matches() -> bool:
            listed.clear()
            listed.update(m.channel for m in await nodes[0].registry.members(GROUP))
            return listed == local

        with contextlib.suppress(TimeoutError):
            await eventually(registry_matches, 10)
        assert listed == local, (sorted(local - listed), sorted(listed - local))
        return {
            "members": members,
            "sender": sender,
            "late": late,
            "fault_at": fault_at,
            "fault_done_at": fault_done_at,
            "switched_at": switched_at,
            "resubscribed_at": resubscribed_at,
            "stopped_at": stopped_at,
        }
    finally:
        for task in tasks:
            task.cancel()
        if tasks:  # receivers wait on local mailboxes: a cancellation ends them at once
            await asyncio.wait(tasks, timeout=10)
        for layer in [*nodes, sender_layer, *([late_layer] if late_layer else [])]:
            await layer.close()


def _check(run: dict[str, Any], label: str) -> None:
    members: list[Member] = run["members"]
    sender: Sender = run["sender"]
    late: Sender = run["late"]
    fault_at, switched_at = run["fault_at"], run["switched_at"]
    window_start = fault_at - IN_FLIGHT_SLACK
    window_end = run["resubscribed_at"] + 0.5  # the sender's own switch may lag a little
    lost_counts, gaps = [], []
    for member in members[:4]:  # the members that saw the whole run
        counted = faults.tally(sender.sent, member.numbers("steady"))
        assert counted.duplicated == 0, counted
        assert counted.reordered == 0, counted
        received = set(member.numbers("steady"))
        lost_at = sorted(sender.sent[n] for n in sender.sent if n not in received)
        # Nothing lost outside the window from the fault until the members followed it.
        outside = [t - fault_at for t in lost_at if not window_start <= t <= window_end]
        assert outside == [], (label, "lost outside the window (s after the fault)", outside)
        lost_counts.append(counted.lost)
        gaps.append(_gap(member, "steady", fault_at))
    for member in members:  # the late process's messages reach every member, once
        counted = faults.tally(late.sent, member.numbers("late"))
        assert (counted.lost, counted.duplicated, counted.reordered) == (0, 0, 0), counted
    assert late.errors == []
    # group_send waited for the new master instead of failing. Only a call in flight
    # when the master was killed may fail: its PUBLISH may or may not have run.
    in_flight = [e for e in sender.errors if e[0] <= run["fault_done_at"]]
    assert sender.errors == in_flight, (label, sender.errors)
    assert len(in_flight) <= 1, (label, sender.errors)
    print(
        f"\n[{label}] fault->+switch-master {switched_at - fault_at:.2f}s; "
        f"+switch-master->members resubscribed {run['resubscribed_at'] - switched_at:.2f}s; "
        f"delivery gap per member {', '.join(f'{g:.2f}' for g in gaps)}s; "
        f"lost per member {lost_counts} of {len(sender.sent)}; "
        f"group_send errors {len(sender.errors)}; slowest group_send {sender.slowest:.2f}s"
    )


async def test_sentinel_failover_during_traffic(sentinels: SentinelDeployment) -> None:
    prefix = "t" + uuid.uuid4().hex[:10]
    port = sentinels.sentinels[0].port
    run = await _failover_during_traffic(
        sentinels, prefix, lambda: faults.sentinel_failover(port, MASTER_NAME)
    )
    _check(run, "SENTINEL FAILOVER")


async def test_sigkill_of_the_master_during_traffic(sentinels: SentinelDeployment) -> None:
    prefix = "t" + uuid.uuid4().hex[:10]
    master = sentinels.master()
    run = await _failover_during_traffic(sentinels, prefix, lambda: faults.sigkill(master.process))
    _check(run, "SIGKILL")
