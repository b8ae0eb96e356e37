"""The layer on a real local Redis Cluster through a reshard and a CLUSTER FAILOVER.

A sender layer ``group_send``s numbered messages while a fault moves the group's slot;
a receiver layer ``receive``s them. Each stream is tallied (``tests/faults.py``): no
duplicate, no reordering, nothing lost outside the window from the fault until delivery
resumed, delivery resumes within :data:`RESUME_BOUND`, and neither the sender nor the
receiver sees an error. Afterwards the registry still lists the member (re-asserted
where the fault may have lost it). Run
``pytest tests/test_cluster_faults.py -p no:randomly -s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from broadcast_layer import BroadcastChannelLayer
from broadcast_layer._protocol.keys import Keys

from . import faults
from .cluster import RedisCluster
from .conftest import eventually, within

RATE = 100  # group_send per second
#: Generous bound on "delivery resumes" (the machine is loaded).
RESUME_BOUND = 10.0
#: A message sent just before the fault can be in flight when the slot moves.
IN_FLIGHT_SLACK = 0.05
GROUP = "live"


@dataclass
class Stream:
    """Numbered group messages from one layer, and what went wrong sending them."""

    layer: BroadcastChannelLayer
    sent: list[tuple[int, float]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    async def run(self) -> None:
        task = asyncio.current_task()
        n = 0
        # Not `while True`: redis-py can swallow a cancellation (or turn it into an
        # error), so the stream checks whether it was asked to stop.
        while task is None or not task.cancelling():
            n += 1
            at = time.monotonic()
            try:
                await self.layer.group_send(GROUP, {"type": "m", "n": n})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a consumer would see this: the test fails on it
                self.errors.append(exc)
            else:
                self.sent.append((n, at))
            await asyncio.sleep(1 / RATE)


@dataclass
class Inbox:
    """What the receiver got: (number, arrival time), and any error receive raised."""

    got: list[tuple[int, float]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    async def run(self, layer: BroadcastChannelLayer, channel: str) -> None:
        task = asyncio.current_task()
        while task is None or not task.cancelling():  # see Stream.run
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors.append(exc)
                await asyncio.sleep(0.01)
            else:
                self.got.append((message["n"], time.monotonic()))

    def numbers(self) -> list[int]:
        return [n for n, _ in self.got]


@contextlib.asynccontextmanager
async def running(*coros: object) -> AsyncIterator[None]:
    tasks = [asyncio.ensure_future(coro) for coro in coros]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def through_a_fault(
    redis_cluster: RedisCluster, prefix: str, fault: Callable[[str], object], label: str
) -> None:
    config = {"hosts": [redis_cluster.url], "cluster": True, "prefix": prefix,
              "heartbeat_interval": 0.5, "node_ttl": 5.0}  # fmt: skip
    receiver, sender = BroadcastChannelLayer(**config), BroadcastChannelLayer(**config)
    try:
        async with asyncio.timeout(90):
            await _through_a_fault(receiver, sender, fault, label)
    finally:
        await receiver.close()
        await sender.close()


async def _through_a_fault(
    receiver: BroadcastChannelLayer,
    sender: BroadcastChannelLayer,
    fault: Callable[[str], object],
    label: str,
) -> None:
    channel = await receiver.new_channel()
    await receiver.group_add(GROUP, channel)
    inbox, stream = Inbox(), Stream(sender)
    group_channel = Keys(receiver.config.prefix, cluster=True).group_channel(GROUP)
    async with running(inbox.run(receiver, channel), stream.run()):
        await eventually(lambda: len(inbox.got) >= 50, 20)
        fault_at = time.monotonic()
        await asyncio.to_thread(fault, group_channel)
        done_at = time.monotonic()
        await eventually(lambda: any(at > done_at for _, at in inbox.got), RESUME_BOUND)
        resumed_at = min(at for _, at in inbox.got if at > done_at)
        mark = len(inbox.got)
        await eventually(lambda: len(inbox.got) >= mark + 50, 20)
        last = stream.sent[-1][0]
        # The sender keeps going until the last number is in: the stream is drained.
        await eventually(lambda: last in inbox.numbers(), 10)

    sent = [n for n, at in stream.sent if n <= last]
    result = faults.tally(sent, [n for n in inbox.numbers() if n <= last])
    sent_at = dict(stream.sent)
    lost = [sent_at[n] for n in set(sent) - set(inbox.numbers())]
    arrivals = dict(inbox.got)
    after = [arrivals[n] for n, at in stream.sent if lost and at > max(lost) and n in arrivals]
    outage = min(after) - min(lost) if lost else 0.0
    print(
        f"\n{label} through the layer: the fault took {done_at - fault_at:.3f}s; delivery "
        f"resumed {resumed_at - done_at:.3f}s after it; outage {outage:.3f}s; sent "
        f"{result.sent}, lost {result.lost}, duplicated {result.duplicated}, reordered "
        f"{result.reordered}; errors: send {len(stream.errors)}, receive {len(inbox.errors)}"
    )
    assert stream.errors == []
    assert inbox.errors == []
    assert result.duplicated == 0
    assert result.reordered == 0
    assert all(fault_at - IN_FLIGHT_SLACK <= at <= resumed_at for at in lost), "lost outside"
    # The registry still tells the truth (re-asserted where the fault may have lost it).
    await eventually(lambda: _listed(sender, channel), 15)


async def _listed(layer: BroadcastChannelLayer, channel: str) -> bool:
    members = await layer.registry.members(GROUP)
    return [member.channel for member in members] == [channel] and (
        await layer.registry.room_size(GROUP) == 1
    )


@pytest.mark.slow
async def test_a_reshard_during_group_traffic(redis_cluster: RedisCluster, prefix: str) -> None:
    await through_a_fault(
        redis_cluster, prefix, lambda channel: faults.reshard(redis_cluster, channel), "reshard"
    )


@pytest.mark.slow
async def test_a_failover_during_group_traffic(redis_cluster: RedisCluster, prefix: str) -> None:
    def fail_over(channel: str) -> None:
        faults.cluster_failover(redis_cluster, redis_cluster.owner_of(channel))

    await through_a_fault(redis_cluster, prefix, fail_over, "CLUSTER FAILOVER")


@pytest.mark.slow
async def test_a_master_that_lost_its_data_gets_the_records_back(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    """FLUSHALL on the master of a group's slot, with its connections dropped (a restart
    without persistence, as the layer sees it): the member's node re-asserts there."""
    config = {"hosts": [redis_cluster.url], "cluster": True, "prefix": prefix,
              "heartbeat_interval": 0.3, "node_ttl": 5.0}  # fmt: skip
    layer = BroadcastChannelLayer(**config)
    try:
        channel = await layer.new_channel()
        await layer.group_add(GROUP, channel)
        master = redis_cluster.owner_of(Keys(prefix, cluster=True).members(GROUP))
        url = f"redis://127.0.0.1:{master.port}"
        faults.flushall(url)
        faults.kill_clients(url)
        await eventually(lambda: _listed(layer, channel), 15)
        # Pub/sub is at most once: send once the master has the subscription again.
        subscriber = layer.nodes.current().core.hosts[0].subscriber
        group_channel = Keys(prefix, cluster=True).group_channel(GROUP)
        await eventually(lambda: subscriber.acknowledged(group_channel), 15)
        await layer.group_send(GROUP, {"type": "m", "n": 1})
        assert (await within(layer.receive(channel)))["n"] == 1
    finally:
        await layer.close()


async def test_health_and_connection_signals_on_a_cluster(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    """layer.health() passes through the node's sharded connection; killing the pub/sub
    connections on every master sends connection_lost, then connection_restored once
    every master's connection is back (never two losses in a row)."""
    from broadcast_layer.signals import connection_lost, connection_restored

    events: list[str] = []

    def on_lost(sender: object, **kwargs: object) -> None:
        events.append("lost")

    def on_restored(sender: object, **kwargs: object) -> None:
        events.append("restored")

    layer = BroadcastChannelLayer(hosts=[redis_cluster.url], cluster=True, prefix=prefix)
    connection_lost.connect(on_lost)
    connection_restored.connect(on_restored)
    try:
        channel = await layer.new_channel()
        for i in range(12):  # groups on every master
            await layer.group_add(f"g{i}", channel)
        health = await layer.health(timeout=10)
        assert health.ok, health
        assert health.pubsub == ("connected",)
        urls = [f"redis://127.0.0.1:{master.port}" for master in redis_cluster.masters()]
        await asyncio.to_thread(lambda: [faults.kill_clients(url, "pubsub") for url in urls])
        await eventually(lambda: events[-1:] == ["restored"], 20)
        # One lost/restored pair per outage: the kills may overlap (one pair) or not.
        assert events[0::2] == ["lost"] * (len(events) // 2)
        assert events[1::2] == ["restored"] * (len(events) // 2)
        assert (await layer.health(timeout=10)).ok
    finally:
        connection_lost.disconnect(on_lost)
        connection_restored.disconnect(on_restored)
        await layer.close()


async def test_a_master_refusing_new_clients_does_not_stop_the_heartbeat(
    redis_cluster: RedisCluster, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A master at maxclients answers a new connection with an error that redis-py
    reads as a ResponseError, not a ConnectionError: the node's upkeep logs the failed
    heartbeat and beats again once the master takes connections."""
    layer = BroadcastChannelLayer(hosts=[redis_cluster.url], cluster=True, prefix=prefix,
                                  heartbeat_interval=0.2, node_ttl=5.0)  # fmt: skip
    try:
        channel = await layer.new_channel()
        await layer.group_add(GROUP, channel)
        record = redis_cluster.owner_of(Keys(prefix, cluster=True).node(layer.node_id))
        with faults.refusing_new_clients(f"redis://127.0.0.1:{record.port}") as admin:
            await asyncio.to_thread(admin.client_kill_filter, _type="normal", skipme=True)
            await eventually(lambda: "Heartbeat failed" in caplog.text, 20)
        back = datetime.now(UTC)

        async def beats_again() -> bool:
            (node,) = await layer.registry.nodes()
            return node.heartbeat > back

        await eventually(beats_again, 20)
    finally:
        await layer.close()
