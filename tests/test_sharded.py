"""The sharded subscriber on a real local cluster: delivery, reshard, failover, killed links.

A steady sender ``SPUBLISH``es numbered messages through its own cluster client while a
fault moves the channel's slot (``tests/faults.py``: reshard, ``CLUSTER FAILOVER``,
``CLIENT KILL TYPE pubsub``). Each stream is tallied: no duplicate or reordering ever,
nothing lost outside the window from the fault until delivery resumed, and delivery
resumes within :data:`RESUME_BOUND`. Run
``pytest tests/test_sharded.py -p no:randomly -s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from broadcast_layer._redis.sharded import ShardedSubscriber, spublish

from . import faults
from .cluster import Node, RedisCluster, channels_on_every_master
from .conftest import eventually, within

RATE = 200  # SPUBLISH per second
#: Generous bound on "delivery resumes" (the machine is loaded): measured in tens of ms.
RESUME_BOUND = 10.0
#: A message published just before the fault can be in flight when the slot moves.
IN_FLIGHT_SLACK = 0.05


@dataclass
class Inbox:
    """What the subscriber delivered, per channel: (number, arrival time)."""

    got: dict[bytes, list[tuple[int, float]]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, channel: bytes, data: bytes) -> None:
        self.got.setdefault(channel, []).append((int(data), time.monotonic()))
        self.arrived.set()

    def numbers(self, channel: str) -> list[int]:
        return [n for n, _ in self.got.get(channel.encode(), [])]


@contextlib.asynccontextmanager
async def cluster_client(cluster: RedisCluster) -> AsyncIterator[ClusterClient]:
    client = ClusterClient(host="127.0.0.1", port=cluster.nodes[0].port)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def subscriber(
    cluster: ClusterClient, inbox: Inbox, **options: float
) -> AsyncIterator[ShardedSubscriber]:
    sub = ShardedSubscriber(cluster, inbox, **options)  # type: ignore[arg-type]
    try:
        yield sub
    finally:
        await sub.close()


def shard_subscribers(node: Node, channel: str) -> int:
    return int(node.call("PUBSUB", "SHARDNUMSUB", channel)[1])  # type: ignore[index]


async def test_subscribes_at_every_owner_and_receives_every_spublish(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    channels = channels_on_every_master(redis_cluster, prefix)
    inbox = Inbox()
    async with cluster_client(redis_cluster) as client, subscriber(client, inbox) as sub:
        await within(sub.subscribe(channels))

        masters = redis_cluster.masters()
        assert sub.masters == {m.address for m in masters}  # one connection per owner
        for channel in channels:
            owner = redis_cluster.owner_of(channel)
            assert sub.acknowledged(channel)
            # SPUBLISH goes to the slot owner, the one node where the channel is subscribed.
            assert shard_subscribers(owner, channel) == 1
            assert all(shard_subscribers(m, channel) == 0 for m in masters if m is not owner)
            assert await spublish(client, channel, b"1") == 1
        await eventually(lambda: all(inbox.numbers(c) == [1] for c in channels))

        await sub.unsubscribe(channels[:1])
        assert shard_subscribers(redis_cluster.owner_of(channels[0]), channels[0]) == 0
        assert await spublish(client, channels[0], b"2") == 0


async def test_spublish_follows_a_moved_slot(redis_cluster: RedisCluster, prefix: str) -> None:
    channel = f"{prefix}.moved"
    inbox = Inbox()
    async with cluster_client(redis_cluster) as client, subscriber(client, inbox) as sub:
        await within(sub.subscribe([channel]))
        async with cluster_client(redis_cluster) as stale:  # its slot map predates the move
            target = await asyncio.to_thread(faults.reshard, redis_cluster, channel)
            await eventually(lambda: shard_subscribers(target, channel) == 1, RESUME_BOUND)
            # The stale client sent it to the old owner, met MOVED and sent it again there.
            assert await spublish(stale, channel, b"7") == 1
        await eventually(lambda: inbox.numbers(channel) == [7])


@dataclass
class Stream:
    """Numbered SPUBLISHes at :data:`RATE`: each one's number and when it was sent."""

    client: ClusterClient
    channel: str
    sent: list[tuple[int, float]] = field(default_factory=list)
    failed: int = 0  # SPUBLISH calls that raised (the cluster was between owners)

    async def run(self) -> None:
        task = asyncio.current_task()
        n = 0
        # Not `while True`: redis-py's cluster client can swallow a cancellation (or turn
        # it into an error), so the stream checks whether it was asked to stop.
        while task is None or not task.cancelling():
            n += 1
            at = time.monotonic()
            try:
                await spublish(self.client, self.channel, str(n).encode())
            except Exception:
                self.failed += 1
            else:
                self.sent.append((n, at))
            await asyncio.sleep(1 / RATE)


async def stream_through(
    redis_cluster: RedisCluster, channel: str, fault: Callable[[], object], label: str
) -> None:
    """Run a stream through ``fault``, with a bound: a hang fails here, with its place."""
    async with asyncio.timeout(60):
        await _stream_through(redis_cluster, channel, fault, label)


async def _stream_through(
    redis_cluster: RedisCluster, channel: str, fault: Callable[[], object], label: str
) -> None:
    """Run a stream to a subscribed channel through ``fault``; tally it and bound the gap."""
    inbox = Inbox()
    async with (
        cluster_client(redis_cluster) as client,
        cluster_client(redis_cluster) as sender,
        # No periodic safety net within the test: recovery must come from the fault's own
        # signal (the sunsubscribe push, MOVED, the lost connection).
        subscriber(client, inbox, reconcile_interval=120) as sub,
    ):
        await within(sub.subscribe([channel]))
        stream = Stream(sender, channel)
        task = asyncio.create_task(stream.run())
        try:
            await eventually(lambda: len(inbox.numbers(channel)) >= 50)
            fault_at = time.monotonic()
            await asyncio.to_thread(fault)
            done_at = time.monotonic()

            def resumed() -> bool:
                return any(at > done_at for _, at in inbox.got[channel.encode()])

            await eventually(resumed, RESUME_BOUND)
            resumed_at = min(at for _, at in inbox.got[channel.encode()] if at > done_at)
            mark = len(inbox.numbers(channel))
            await eventually(lambda: len(inbox.numbers(channel)) >= mark + 50)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        last = stream.sent[-1][0]
        await eventually(lambda: last in inbox.numbers(channel))  # drained

    result = faults.tally([n for n, _ in stream.sent], inbox.numbers(channel))
    sent_at = dict(stream.sent)
    lost = [sent_at[n] for n in set(sent_at) - set(inbox.numbers(channel))]
    # The outage: from the first message lost to the arrival of the first one sent after
    # the last loss (zero when nothing was lost).
    arrivals = dict(inbox.got[channel.encode()])
    after = [arrivals[n] for n, at in stream.sent if lost and at > max(lost) and n in arrivals]
    outage = min(after) - min(lost) if lost else 0.0
    print(
        f"\n{label}: the fault took {done_at - fault_at:.3f}s; outage {outage:.3f}s; "
        f"sent {result.sent}, lost {result.lost}, duplicated {result.duplicated}, "
        f"reordered {result.reordered}; SPUBLISH errors {stream.failed}, "
        f"slot map re-reads {sub.refreshes}"
    )
    assert result.duplicated == 0
    assert result.reordered == 0
    assert all(fault_at - IN_FLIGHT_SLACK <= at <= resumed_at for at in lost), "lost outside"


@pytest.mark.slow
async def test_a_reshard_during_traffic_loses_only_inside_the_window(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    channel = f"{prefix}.reshard"
    await stream_through(
        redis_cluster, channel, lambda: faults.reshard(redis_cluster, channel), "reshard"
    )


@pytest.mark.slow
async def test_a_failover_during_traffic_loses_only_inside_the_window(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    channel = f"{prefix}.failover"
    master = redis_cluster.owner_of(channel)
    await stream_through(
        redis_cluster,
        channel,
        lambda: faults.cluster_failover(redis_cluster, master),
        "CLUSTER FAILOVER",
    )


@pytest.mark.slow
async def test_a_killed_pubsub_connection_resubscribes(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    channel = f"{prefix}.killed"
    owner = redis_cluster.owner_of(channel)

    def kill() -> None:
        assert faults.kill_clients(f"redis://127.0.0.1:{owner.port}", "pubsub") >= 1

    await stream_through(redis_cluster, channel, kill, "CLIENT KILL TYPE pubsub")
