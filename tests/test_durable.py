"""Durable worker channels: competing receivers, acknowledgement, redelivery after a crash.

The tests marked ``on_both`` run on the session's redis-server and on its local cluster.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from broadcast_layer import ChannelFull, ConfigurationError
from broadcast_layer.layer import BroadcastChannelLayer

from . import faults
from .conftest import eventually, on_both, within

DURABLE = {"jobs.*": {"claim_after": 0.5}}


def stream(prefix: str, channel: str) -> str:
    return f"{prefix}:durable:{{{channel}}}"


def pending(redis_client, prefix: str, channel: str) -> int:
    return int(redis_client.xpending(stream(prefix, channel), "workers")["pending"])


async def test_a_message_is_acknowledged_by_the_next_receive(make_layer, redis_client, prefix):
    layer = make_layer(durable_channels=DURABLE)
    for n in range(2):
        await layer.send("jobs.a", {"type": "job", "n": n})
    assert (await within(layer.receive("jobs.a")))["n"] == 0
    assert pending(redis_client, prefix, "jobs.a") == 1
    assert (await within(layer.receive("jobs.a")))["n"] == 1
    assert pending(redis_client, prefix, "jobs.a") == 1  # the first is acknowledged
    assert redis_client.xlen(stream(prefix, "jobs.a")) == 1  # and deleted


async def test_a_clean_close_acknowledges(make_layer, redis_client, prefix):
    layer = make_layer(durable_channels=DURABLE)
    await layer.send("jobs.b", {"type": "job"})
    await within(layer.receive("jobs.b"))
    await layer.close()
    assert pending(redis_client, prefix, "jobs.b") == 0
    assert redis_client.xlen(stream(prefix, "jobs.b")) == 0


async def test_a_receive_waits_for_a_send(make_layer):
    sender, worker = make_layer(durable_channels=DURABLE), make_layer(durable_channels=DURABLE)
    waiting = asyncio.create_task(worker.receive("jobs.wait"))
    await asyncio.sleep(0.1)  # let it block in XREADGROUP: a later send must wake it
    await sender.send("jobs.wait", {"type": "job", "n": 7})
    assert (await within(waiting))["n"] == 7


async def test_capacity_counts_unacknowledged_messages(make_layer):
    layer = make_layer(durable_channels=DURABLE, channel_capacity={"jobs.*": 2})
    await layer.send("jobs.full", {"type": "job"})
    await layer.send("jobs.full", {"type": "job"})
    with pytest.raises(ChannelFull):
        await layer.send("jobs.full", {"type": "job"})


async def test_other_channels_are_unchanged(make_layer, redis_client, prefix):
    layer = make_layer(durable_channels=DURABLE)
    await layer.send("tasks.x", {"type": "job"})
    assert await within(layer.receive("tasks.x")) == {"type": "job"}
    assert redis_client.keys(f"{prefix}:durable:*") == []


@pytest.mark.parametrize(
    "durable",
    [
        ["jobs.*"],
        {"jobs.*": {}},
        {"jobs.*": {"claim_after": 0}},
        {"jobs.*": {"claim_after": 86401}},
        {"jobs.*": {"claim_after": 1, "other": 1}},
        {"jobs.[": {"claim_after": 1}},
    ],
)
def test_bad_durable_config_names_the_key(durable):
    with pytest.raises(ConfigurationError, match="durable_channels"):
        BroadcastChannelLayer(durable_channels=durable)


@pytest.mark.slow
def test_competing_worker_processes_get_different_messages(node_processes, redis_url, prefix):
    env = {"DURABLE_CHANNELS": json.dumps(DURABLE)}
    workers = [node_processes(env=env) for _ in range(2)]
    for worker in workers:
        worker.ask(op="collect", channel="jobs.shared")
    layer = BroadcastChannelLayer(hosts=[redis_url], prefix=prefix, durable_channels=DURABLE)

    async def send_and_collect() -> list[list[int]]:
        try:
            for n in range(60):
                await layer.send("jobs.shared", {"type": "job", "n": n})

            def reports() -> list[list[int]]:
                return [w.ask(op="report")["received"].get("jobs.shared", []) for w in workers]

            await eventually(lambda: sum(map(len, reports())) >= 60, seconds=20)
            return reports()
        finally:
            await layer.close()

    got = asyncio.run(send_and_collect())
    assert sorted(got[0] + got[1]) == list(range(60))  # each message once
    assert all(got), "both workers got a share"


@pytest.mark.slow
@on_both
async def test_a_killed_workers_message_is_redelivered_after_claim_after(
    node_processes, make_layer, redis_client, prefix
):
    doomed = node_processes(env={"DURABLE_CHANNELS": json.dumps(DURABLE)})
    layer = make_layer(durable_channels=DURABLE)
    await layer.send("jobs.roll", {"type": "job", "n": 1})
    taken = await asyncio.to_thread(doomed.ask, op="receive", channel="jobs.roll")
    assert taken["message"]["n"] == 1
    faults.sigkill(doomed.process)  # it never acknowledges
    assert pending(redis_client, prefix, "jobs.roll") == 1
    again = await within(layer.receive("jobs.roll"), seconds=20)
    assert again["n"] == 1
    # The dead process's consumer, with nothing pending now, is deleted once idle.
    await layer.send("jobs.roll", {"type": "job", "n": 2})
    assert (await within(layer.receive("jobs.roll")))["n"] == 2

    def consumers() -> set[str]:
        return {
            c["name"].decode()
            for c in redis_client.xinfo_consumers(stream(prefix, "jobs.roll"), "workers")
        }

    assert len(consumers()) == 2
    await asyncio.sleep(5.5)  # 10 x claim_after idle
    await layer.send("jobs.roll", {"type": "job", "n": 3})
    assert (await within(layer.receive("jobs.roll")))["n"] == 3
    assert len(consumers()) == 1
