"""Registry writes of one pipeline go to Redis as one script call (``_protocol/batch.py``),
with each write's own result, in the order submitted, on a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from broadcast_layer._protocol import batch, scripts
from broadcast_layer._protocol.scripts import Call, script_name
from broadcast_layer._redis.host import Host
from broadcast_layer._redis.writer import OrderedWriter
from broadcast_layer.layer import BroadcastChannelLayer

from . import faults
from .conftest import NO_TICKS, eventually, within


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The script calls of each pipeline the hosts send, by name."""
    pipelines: list[list[str]] = []
    pipeline = Host._pipeline

    async def logged(host: Host, calls: list[Call[Any]]) -> list[Any]:
        pipelines.append([script_name(call.script) for call in calls])
        return await pipeline(host, calls)

    monkeypatch.setattr(Host, "_pipeline", logged)
    return pipelines


async def test_the_writes_of_one_pipeline_share_one_script_call(make_layer, sent):
    layer: BroadcastChannelLayer = make_layer(**NO_TICKS)
    channel = await layer.new_channel()
    node = layer.nodes.current()
    calls, node_id = node.core.calls, node.id
    sent.clear()
    # Joins, a leave and a rejoin of one membership, a heartbeat (not batchable) between.
    writes = [
        *calls.join("a", channel, node_id),
        *calls.join("b", channel, node_id),
        *calls.leave("a", channel, node_id),
        calls.heartbeat(node_id, 0.0, 1),
        *calls.join("a", channel, node_id),
        calls.set_metadata(channel, node_id, {"name": "Ann"}),
    ]
    results = await node.registry.host.run_all(writes)
    # Each write's own result; on one server a join or a leave is one call (both sides).
    assert [script_name(call.script) for call in writes[:3]] == ["JOIN", "JOIN", "LEAVE"]
    assert results == [1, 1, 1, 1, 1, 1]
    assert sent == [["REGISTRY_BATCH", "HEARTBEAT", "REGISTRY_BATCH"]]
    # As if run one by one: in a, b (a left, then joined again), with the metadata.
    assert set(await layer.registry.groups_of(channel)) == {"a", "b"}
    assert {room.name: room.size for room in (await layer.registry.rooms()).rooms} == {
        "a": 1,
        "b": 1,
    }
    [member] = await layer.registry.members("a")
    assert (member.channel, member.metadata) == (channel, {"name": "Ann"})


async def test_a_lone_join_or_leave_is_a_batch_with_its_own_result(make_layer, sent):
    """On one server a join (or a leave) is one call for both sides; alone in a pipeline
    it still goes as the batch script (loaded by every batch), with its own result."""
    layer: BroadcastChannelLayer = make_layer(**NO_TICKS)
    channel = await layer.new_channel()
    node = layer.nodes.current()
    calls, host = node.core.calls, node.registry.host
    sent.clear()
    assert await host.run_all(calls.join("a", channel, node.id)) == [1]  # a new membership
    assert await host.run_all(calls.join("a", channel, node.id)) == [0]  # refreshed
    assert set(await layer.registry.groups_of(channel)) == {"a"}
    assert await host.run_all(calls.leave("a", channel, node.id)) == [1]
    assert await host.run_all(calls.leave("a", channel, node.id)) == [0]  # already gone
    assert sent == [["REGISTRY_BATCH"]] * 4
    assert await layer.registry.groups_of(channel) == {}
    assert await layer.registry.room_size("a") == 0


async def test_a_failing_write_fails_alone(make_layer, redis_client: redis.Redis, prefix, sent):
    layer: BroadcastChannelLayer = make_layer(**NO_TICKS)
    channel = await layer.new_channel()
    node = layer.nodes.current()
    calls = node.core.calls
    redis_client.set(calls.keys.members("broken"), "not a sorted set")
    sent.clear()
    writes = [*calls.join("fine", channel, node.id), *calls.join("broken", channel, node.id),
              *calls.join("also", channel, node.id)]  # fmt: skip
    results = await node.registry.host.run_all(writes)
    assert sent == [["REGISTRY_BATCH"]]
    assert isinstance(results[1], redis.ResponseError)
    assert "WRONGTYPE" in str(results[1])
    assert [results[0], results[2]] == [1, 1]
    assert sorted(room.name for room in (await layer.registry.rooms()).rooms) == ["also", "fine"]
    # The failed join's node side did not run after its group side failed.
    assert set(await layer.registry.groups_of(channel)) == {"also", "fine"}


async def test_group_add_through_the_writer_is_one_call_per_pipeline(make_layer, sent):
    layer: BroadcastChannelLayer = make_layer(**NO_TICKS)
    channels = [await layer.new_channel() for _ in range(40)]
    sent.clear()
    await asyncio.gather(*(layer.group_add(f"g{i % 4}", channel)
                           for i, channel in enumerate(channels)))  # fmt: skip
    registry_calls = [name for pipeline in sent for name in pipeline]
    # 40 writes (each join both sides at once) in a few pipelines, one call each
    assert set(registry_calls) <= {"REGISTRY_BATCH", "JOIN"}
    assert len(registry_calls) == len(sent) < 40
    assert sorted((r.name, r.size) for r in (await layer.registry.rooms()).rooms) == [
        (f"g{i}", 10) for i in range(4)
    ]


def test_merge_keeps_each_slots_order_and_caps_a_batch():
    def call(script: str, slot: str) -> Call[Any]:
        shape = scripts.BATCHABLE.get(script, ("", 1, 0))
        return Call(script, [slot] * shape[1], ["x"] * shape[2], int)

    join, heartbeat = scripts.JOIN_RECORD, scripts.HEARTBEAT
    calls = [call(join, "A"), call(join, "B"), call(heartbeat, "A"), call(join, "A"),
             call(join, "B")]  # fmt: skip
    merged = batch.merge(calls, lambda c: c.keys[0])
    # B's writes share one call; A's heartbeat splits A's writes in two
    assert [(script_name(c.script), indexes) for c, indexes in merged] == [
        ("JOIN_RECORD", [0]),
        ("REGISTRY_BATCH", [1, 4]),
        ("HEARTBEAT", [2]),
        ("JOIN_RECORD", [3]),
    ]
    capped = batch.merge([call(join, "A")] * 7, lambda c: None, limit=3)
    assert [indexes for _, indexes in capped] == [[0, 1, 2], [3, 4, 5], [6]]


async def test_writes_for_other_channels_overlap_and_one_channels_keep_their_order(
    make_layer, redis_url
):
    """Pipelines of writes for different channels are in flight together; a write for a
    channel in flight, or one without a channel (a heartbeat), waits for them."""
    host, name = faults.named_host(redis_url)  # only this layer's clients are counted
    layer: BroadcastChannelLayer = make_layer(hosts=[host], **NO_TICKS)
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("warm", first)  # the group's subscription is not what waits
    node = layer.nodes.current()
    with faults.writes_paused(redis_url):
        joins = [asyncio.create_task(layer.group_add("room", first))]
        await eventually(lambda: faults.blocked_on(redis_url, "evalsha", name=name) == 1)
        joins.append(asyncio.create_task(layer.group_add("room", second)))
        await eventually(
            lambda: faults.blocked_on(redis_url, "evalsha", name=name) == 2
        )  # overlapping
        later = asyncio.create_task(layer.group_discard("room", first))  # first's: waits
        beat = node.registry.submit(node.core.calls.heartbeat(node.id, 0.0, 2))  # waits too
        await asyncio.sleep(0.2)  # nothing else may be sent meanwhile (a bounded wait)
        assert faults.blocked_on(redis_url, "evalsha", name=name) == 2
        assert not later.done()
    await within(asyncio.gather(*joins, later, beat))
    assert [m.channel for m in await layer.registry.members("room")] == [second]
    assert set(await layer.registry.groups_of(first)) == {"warm"}


async def test_a_write_submitted_after_close_is_settled_not_left_pending(make_layer):
    """A closed writer runs nothing: a late write is cancelled at once instead of left
    for a caller to await for ever, and an empty submission is refused."""
    layer: BroadcastChannelLayer = make_layer(**NO_TICKS)
    await layer.new_channel()
    node = layer.nodes.current()
    host = node.core.host_for(node.id)
    writer = OrderedWriter(host.run_all, 5.0, batch.scope, 4)
    beat = node.core.calls.heartbeat(node.id, 0.0, 2)
    assert await within(writer.submit(beat)) is not None  # a working writer first
    with pytest.raises(ValueError, match="at least one call"):
        writer.submit_all(())
    await writer.close()
    assert writer.submit(beat).cancelled()
