"""A busy pool makes callers wait for a connection; PoolExhausted comes only after pool_timeout.

Single-flight registry reads are here too: with a pool of 2 and 50 concurrent callers,
every call succeeds and Redis runs one read per coalesced batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
import redis

from broadcast_layer import ConfigurationError, PoolExhausted, RedisUnavailable
from broadcast_layer._redis.host import SyncHost
from broadcast_layer._redis.pools import PoolLimits
from broadcast_layer.layer import BroadcastChannelLayer
from broadcast_layer.registry import RegistryCalls

from . import faults
from .conftest import NO_TICKS, eventually, within


def _clients(redis_client, name: str, command: str | None = None) -> int:
    return sum(
        1
        for client in redis_client.client_list()
        if client["name"] == name and (command is None or client["cmd"] == command)
    )


def _evalsha_calls(redis_client) -> int:
    return int(redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


async def test_fifty_concurrent_reads_over_two_connections_share_one_read_per_batch(
    make_layer, redis_client
):
    # No tick may add EVALSHAs while Redis's counter is read: at the default 5 s a
    # loaded machine saw the reader's heartbeat and reap land inside the count.
    writer = make_layer(**NO_TICKS)
    groups = [f"room-{n}" for n in range(5)]
    channels = {}
    for group in groups:
        channels[group] = [await writer.new_channel() for _ in range(3)]
        for channel in channels[group]:
            await writer.group_add(group, channel)
    reader = make_layer(max_connections=2, pool_timeout=30, **NO_TICKS)
    for group in groups:  # scripts loaded and connections open before counting
        await reader.registry.members(group)

    before = _evalsha_calls(redis_client)
    callers = [reader.registry.members(groups[n % 5]) for n in range(50)]
    results = await within(asyncio.gather(*callers), 60)
    reads = _evalsha_calls(redis_client) - before

    for n, members in enumerate(results):  # every call succeeded, with the right answer
        assert sorted(m.channel for m in members) == sorted(channels[groups[n % 5]])
    # Per group: the first caller's read goes out at once; the nine that arrive while it
    # is in flight share the next one. Five groups, two batches each, ten reads (not 50),
    # each two scripts (the entries, then their node's liveness and metadata).
    assert reads == 2 * 2 * len(groups)


async def test_fifty_different_calls_wait_for_two_connections_and_all_succeed(
    make_layer, redis_url, redis_client, caplog
):
    host, name = faults.named_host(redis_url)
    layer = make_layer(hosts=[host], max_connections=2, pool_timeout=30)
    queues = [f"pool-queue-{n}" for n in range(50)]
    await within(asyncio.gather(*(layer.send(q, {"type": "m", "q": q}) for q in queues)), 60)
    with caplog.at_level(logging.WARNING, logger="broadcast_layer"):
        received = await within(asyncio.gather(*(layer.receive(q) for q in queues)), 60)
        sizes = await within(
            asyncio.gather(*(layer.registry.room_size(f"empty-{n}") for n in range(50))), 60
        )
    assert [message["q"] for message in received] == queues
    assert sizes == [0] * 50
    assert not caplog.records  # no BLPOP failed and was retried: each call waited its turn
    # Two command connections and the pub/sub one (opened by nothing here) at most.
    assert _clients(redis_client, name) <= 2


async def test_pool_exhausted_is_raised_only_after_pool_timeout(
    make_layer, redis_url, redis_client
):
    host, name = faults.named_host(redis_url)
    layer = make_layer(hosts=[host], max_connections=1, pool_timeout=0.3)
    # A receive on an empty normal channel holds the only connection in BLPOP.
    holder = asyncio.ensure_future(layer.receive("pool-nothing-comes"))
    try:
        await eventually(lambda: _clients(redis_client, name, "blpop") == 1, 10)
        started = time.monotonic()
        with pytest.raises(PoolExhausted, match="pool_timeout") as raised:
            await within(layer.send("pool-other", {"type": "m"}), 30)
        assert time.monotonic() - started >= 0.3
        assert isinstance(raised.value, RedisUnavailable)
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
    await within(layer.send("pool-other", {"type": "m"}))  # the pool recovers at once


def test_sync_clients_wait_for_a_connection_then_raise_pool_exhausted(
    redis_url, prefix, redis_client
):
    layer = BroadcastChannelLayer(hosts=[redis_url], prefix=prefix)
    calls = RegistryCalls(layer.config)
    spec, name = faults.named_host(redis_url)
    host = SyncHost(spec, PoolLimits(max_connections=2, timeout=30))
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            for _ in range(20):
                assert host.run_plan(calls.room_size("sync-pool")) == 0
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=ask) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        assert 1 <= _clients(redis_client, name) <= 2
    finally:
        host.close()

    tight = SyncHost({"address": redis_url}, PoolLimits(max_connections=1, timeout=0.3))
    # redis-py before 5.3 wants a command name here; later ones warn when given one.
    name = ("PING",) if redis.VERSION < (5, 3) else ()
    held = tight.client.connection_pool.get_connection(*name)
    try:
        started = time.monotonic()
        with pytest.raises(PoolExhausted):
            tight.run_plan(calls.room_size("sync-pool"))
        assert time.monotonic() - started >= 0.3
    finally:
        tight.client.connection_pool.release(held)
        tight.close()


def test_pool_settings_are_validated():
    with pytest.raises(ConfigurationError, match="max_connections"):
        BroadcastChannelLayer(max_connections=0)
    with pytest.raises(ConfigurationError, match="pool_timeout"):
        BroadcastChannelLayer(pool_timeout=-1)
    assert BroadcastChannelLayer().config.pool_limits == PoolLimits(100, 5.0)


def test_a_host_entry_max_connections_wins_over_config(redis_url):
    layer = BroadcastChannelLayer(hosts=[f"{redis_url}?max_connections=7"], max_connections=3)
    host = SyncHost(layer.config.hosts[0], layer.config.pool_limits)
    try:
        assert host.client.connection_pool.max_connections == 7
    finally:
        host.close()


@pytest.mark.slow
async def test_pipelines_never_keep_every_connection_of_a_small_pool(make_layer, redis_url):
    """The registry writer keeps connections between pipelines; with a pool of two it
    keeps at most one, so a single call afterwards still gets a connection at once."""
    host, name = faults.named_host(redis_url)
    layer = make_layer(hosts=[host], max_connections=2, pool_timeout=0.5, **NO_TICKS)
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("warm", first)
    with faults.writes_paused(redis_url):  # two pipelines in flight: both connections
        joins = [asyncio.create_task(layer.group_add("room", first))]
        await eventually(lambda: faults.blocked_on(redis_url, "evalsha", name=name) == 1)
        joins.append(asyncio.create_task(layer.group_add("room", second)))  # not batched in
        await eventually(lambda: faults.blocked_on(redis_url, "evalsha", name=name) == 2)
    await within(asyncio.gather(*joins))
    await within(layer.send("pool-queue", {"type": "after.pipelines"}))
    assert await within(layer.receive("pool-queue")) == {"type": "after.pipelines"}
