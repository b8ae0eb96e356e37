"""Several layer instances ("nodes") sharing one Redis: fan-out, ref counting, churn."""

from __future__ import annotations

import asyncio
import random

from .conftest import eventually, nothing_arrives, within


def _publish_calls(redis_client) -> int:
    stats = redis_client.info("commandstats")
    return stats.get("cmdstat_publish", {}).get("calls", 0)


async def test_group_send_is_one_publish_whatever_the_group_size(nodes, redis_client):
    members = {0: [], 1: []}
    for index in (0, 1):
        for _ in range(50 if index == 0 else 150):
            channel = await nodes[index].new_channel()
            await nodes[index].group_add("big-room", channel)
            members[index].append(channel)
    before = _publish_calls(redis_client)
    reached = await nodes[2].group_send("big-room", {"type": "m", "text": "once"})
    assert _publish_calls(redis_client) - before == 1
    assert reached == 2  # two nodes, whatever their 200 members
    for index, channels in members.items():
        for channel in channels:
            assert (await within(nodes[index].receive(channel)))["text"] == "once"


async def test_each_node_deserializes_a_group_message_once(nodes):
    class CountingSerializer:
        def __init__(self, inner):
            self.inner, self.decoded = inner, 0

        def serialize(self, message):
            return self.inner.serialize(message)

        def deserialize(self, data):
            self.decoded += 1
            return self.inner.deserialize(data)

    receiver = nodes[1]
    counting = receiver.serializer = CountingSerializer(receiver.serializer)
    channels = [await receiver.new_channel() for _ in range(20)]
    for channel in channels:
        await receiver.group_add("g", channel)
    await nodes[0].group_send("g", {"type": "m"})
    for channel in channels:
        await within(receiver.receive(channel))
    assert counting.decoded == 1


async def test_a_send_issued_after_group_add_returns_always_arrives(nodes):
    member_node, sender = nodes[0], nodes[1]
    for attempt in range(100):
        channel = await member_node.new_channel()
        group = f"fresh-{attempt}"
        await member_node.group_add(group, channel)
        await sender.group_send(group, {"type": "m", "n": attempt})
        assert (await within(member_node.receive(channel), 2))["n"] == attempt


async def test_a_node_unsubscribes_when_its_last_member_leaves(nodes, redis_client, prefix):
    pubsub_channel = f"{prefix}:group:refcount"
    a, b = await nodes[0].new_channel(), await nodes[0].new_channel()
    await nodes[0].group_add("refcount", a)
    await nodes[0].group_add("refcount", b)
    assert redis_client.pubsub_numsub(pubsub_channel) == [(pubsub_channel.encode(), 1)]
    await nodes[0].group_discard("refcount", a)
    assert redis_client.pubsub_numsub(pubsub_channel)[0][1] == 1
    await nodes[0].group_discard("refcount", b)
    # group_discard does not wait for the UNSUBSCRIBE to be acknowledged
    await eventually(lambda: redis_client.pubsub_numsub(pubsub_channel)[0][1] == 0)
    assert nodes[0].stats().groups == frozenset()


async def test_concurrent_churn_leaves_redis_subscriptions_equal_to_local_membership(
    nodes, redis_client, prefix
):
    rng = random.Random()
    groups = [f"churn{i}" for i in range(6)]
    channels = {i: [await nodes[i].new_channel() for _ in range(5)] for i in range(3)}

    async def churn(index: int) -> None:
        layer = nodes[index]
        for _ in range(60):
            group, channel = rng.choice(groups), rng.choice(channels[index])
            if rng.random() < 0.55:
                await layer.group_add(group, channel)
            else:
                await layer.group_discard(group, channel)

    await asyncio.gather(*(churn(i) for i in range(3) for _ in range(4)))
    expected = {group: sum(group in nodes[i].stats().groups for i in range(3)) for group in groups}
    names = [f"{prefix}:group:{group}" for group in groups]

    def redis_matches_local_state() -> bool:
        counts = dict(redis_client.pubsub_numsub(*names))
        return {group: counts[f"{prefix}:group:{group}".encode()] for group in groups} == expected

    # trailing UNSUBSCRIBEs are acknowledged asynchronously
    await eventually(redis_matches_local_state)
    # and every local member of every group still receives
    for index in range(3):
        for group in nodes[index].stats().groups:
            await nodes[index].group_send(group, {"type": "probe", "group": group})
    for index in range(3):
        for channel in channels[index]:
            while True:
                try:
                    async with asyncio.timeout(0.3):
                        await nodes[index].receive(channel)
                except TimeoutError:
                    break


async def test_group_add_for_a_channel_of_another_node_is_carried_out_by_its_owner(nodes):
    owner, other = nodes[0], nodes[1]
    channel = await owner.new_channel()
    await other.group_add("remote-join", channel)
    # the owner joins when the control message arrives
    await eventually(lambda: "remote-join" in owner.stats().groups)
    await other.group_send("remote-join", {"type": "m"})
    assert await within(owner.receive(channel)) == {"type": "m"}
    await other.group_discard("remote-join", channel)
    await eventually(lambda: "remote-join" not in owner.stats().groups)
    await other.group_send("remote-join", {"type": "m"})
    await nothing_arrives(owner, channel)


async def test_a_normal_channel_in_a_group_receives_through_its_queue(nodes):
    await nodes[0].group_add("jobs-group", "jobs.queue")
    await nodes[1].group_send("jobs-group", {"type": "job", "n": 7})
    assert await within(nodes[2].receive("jobs.queue")) == {"type": "job", "n": 7}


async def test_an_abandoned_channel_leaves_its_groups(make_layer, redis_client, prefix):
    layer = make_layer(expiry=0.3)
    channel = await layer.new_channel()
    await layer.group_add("abandoned", channel)
    receiving = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0)
    receiving.cancel()  # what a consumer does when its connection ends
    await asyncio.gather(receiving, return_exceptions=True)
    await eventually(lambda: not layer.stats().groups)
    assert layer.stats().channels == 0


async def test_concurrent_group_sends_stay_one_publish_each_and_keep_each_senders_order(
    nodes, redis_client
):
    member = await nodes[1].new_channel()
    await nodes[1].group_add("busy", member)
    before = _publish_calls(redis_client)

    async def sender(name: str) -> None:
        for n in range(10):
            await nodes[0].group_send("busy", {"type": "m", "from": name, "n": n})

    await asyncio.gather(*(sender(f"s{i}") for i in range(8)))
    assert _publish_calls(redis_client) - before == 80  # still one PUBLISH per group_send
    seen: dict[str, list[int]] = {}
    for _ in range(80):
        message = await within(nodes[1].receive(member))
        seen.setdefault(message["from"], []).append(message["n"])
    assert seen == {f"s{i}": list(range(10)) for i in range(8)}
