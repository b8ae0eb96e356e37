"""Chaos: three node processes and a steady sender through every fault at once.

Phases, during one continuous run: CLIENT KILL of every client, SIGKILL of one node,
and a redis-server restart that loses all data. Each phase's outage window runs from
the fault until Redis again has every surviving node subscribed to the group. For the
surviving members the test counts, per phase, what was lost inside and outside the
window, duplicated and reordered. Outside a window nothing may be lost; nothing is
ever duplicated; and at the end the registry equals the live nodes' state.

``CHAOS_REPORT=path.json`` writes the figures (docs/reliability.md quotes them).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.layer import BroadcastChannelLayer

from . import faults
from .conftest import NodeProcess, eventually

pytestmark = pytest.mark.slow

GROUP = "chaos"
RATE = 100  # group_send calls a second
MEMBERS_PER_NODE = 2
NODE_TTL, HEARTBEAT = 2.0, 0.5


@dataclass
class Send:
    n: int
    started: float
    ended: float
    ok: bool


@dataclass
class Phase:
    name: str
    fault_at: float
    restored_at: float = 0.0
    fault_done_at: float = 0.0
    sends: list[int] = field(default_factory=list)


@pytest.fixture
def chaos_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own: it is restarted without its data mid-run."""
    with EmbeddedRedis() as server:
        yield server


def subscribers(url: str, channel: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.pubsub_numsub(channel)[0][1])
    except redis.ConnectionError:
        return -1
    finally:
        client.close()


async def send_steadily(layer: BroadcastChannelLayer, log: list[Send], stop: asyncio.Event) -> None:
    """group_send numbered messages at RATE a second; a failed send is logged, not retried."""
    n = 0
    next_at = time.monotonic()
    while not stop.is_set():
        n += 1
        started = time.monotonic()
        try:
            await layer.group_send(GROUP, {"type": "chaos.message", "n": n})
            ok = True
        except Exception:  # an outage: the send is refused, so it is not expected anywhere
            ok = False
        log.append(Send(n, started, time.monotonic(), ok))
        next_at = max(next_at + 1 / RATE, time.monotonic() - 1 / RATE)  # no catch-up burst
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def restored(url: str, channel: str, live: int, since: float) -> float:
    """When Redis again has ``live`` subscribers on the group's channel (polled every 10 ms)."""
    while True:
        if await asyncio.to_thread(subscribers, url, channel) == live:
            return time.monotonic()
        await asyncio.sleep(0.01)
        if time.monotonic() - since > 30:
            raise AssertionError(f"{channel} never had {live} subscribers again")


def figures(phases: list[Phase], log: list[Send], received: list[int]) -> dict[str, Any]:
    """Per phase, for one member: sent, refused, lost inside/outside the window, dups, order."""
    by_n = {send.n: send for send in log}
    got = set(received)
    out: dict[str, Any] = {}
    for phase in phases:
        sends = [by_n[n] for n in phase.sends]
        accepted = [s for s in sends if s.ok]

        def inside(send: Send, phase: Phase = phase) -> bool:
            # In flight when the fault hit, or sent before Redis had every node back.
            return send.ended >= phase.fault_at - 0.05 and send.started <= phase.restored_at

        lost = [s for s in accepted if s.n not in got]
        numbers = [n for n in received if n in set(phase.sends)]
        counted = faults.tally([s.n for s in accepted], numbers)
        out[phase.name] = {
            "lost_in_window": sum(1 for s in lost if inside(s)),
            "lost_outside_window": sum(1 for s in lost if not inside(s)),
            "duplicated": counted.duplicated,
            "reordered": counted.reordered,
        }
    return out


async def test_chaos_client_kill_node_kill_and_data_losing_restart(chaos_redis, prefix, tmp_path):
    url = chaos_redis.url
    start = [asyncio.to_thread(NodeProcess, url, prefix, NODE_TTL, HEARTBEAT) for _ in range(3)]
    nodes: list[NodeProcess] = list(await asyncio.gather(*start))
    members: dict[int, list[str]] = {}
    node_ids: list[str] = []
    sender = BroadcastChannelLayer(
        hosts=[url], prefix=prefix, node_ttl=NODE_TTL, heartbeat_interval=HEARTBEAT
    )
    try:
        for i, node in enumerate(nodes):
            members[i] = []
            for _ in range(MEMBERS_PER_NODE):
                made = await asyncio.to_thread(node.ask, op="new_channel")
                channel = made["channel"]
                if made["node"] not in node_ids:
                    node_ids.append(made["node"])
                await asyncio.to_thread(node.ask, op="group_add", group=GROUP, channel=channel)
                await asyncio.to_thread(node.ask, op="collect", channel=channel)
                members[i].append(channel)
        pubsub_channel = sender.config.prefix + ":group:" + GROUP
        log: list[Send] = []
        stop = asyncio.Event()
        sending = asyncio.create_task(send_steadily(sender, log, stop))
        phases: list[Phase] = []
        try:
            await asyncio.sleep(1.5)  # baseline
            phase = Phase("client_kill", time.monotonic())
            phases.append(phase)
            await asyncio.to_thread(faults.kill_clients, url)
            phase.fault_done_at = time.monotonic()
            phase.restored_at = await restored(url, pubsub_channel, 3, phase.fault_at)
            await asyncio.sleep(1.5)

            phase = Phase("node_sigkill", time.monotonic())
            phases.append(phase)
            victim = nodes.pop()
            faults.sigkill(victim.process)
            victim.stop()  # closes its pipes
            phase.restored_at = phase.fault_at  # the survivors' subscriptions are untouched
            await asyncio.sleep(1.5)

            phase = Phase("restart_without_data", time.monotonic())
            phases.append(phase)
            await asyncio.to_thread(faults.restart_without_persistence, chaos_redis)
            phase.restored_at = await restored(url, pubsub_channel, 2, phase.fault_at)
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await sending
        await asyncio.sleep(0.5)  # let the last messages arrive

        bounds = [p.fault_at for p in phases[1:]] + [float("inf")]
        for phase, until in zip(phases, bounds, strict=True):
            phase.sends = [s.n for s in log if phase.fault_at <= s.started < until]
        report: dict[str, Any] = {"rate": RATE, "members": 2 * MEMBERS_PER_NODE, "phases": {}}
        by_n = {send.n: send for send in log}
        for phase in phases:
            report["phases"][phase.name] = {
                "sent": len(phase.sends),
                "refused": sum(1 for n in phase.sends if not by_n[n].ok),
                "window_s": round(phase.restored_at - phase.fault_at, 3),
            }
        for i, node in enumerate(nodes):
            received = (await asyncio.to_thread(node.ask, op="report"))["received"]
            for channel in members[i]:
                per_phase = figures(phases, log, received.get(channel, []))
                for name, counts in per_phase.items():  # summed over the members
                    total = report["phases"][name]
                    for key, value in counts.items():
                        total[key] = total.get(key, 0) + value

        # The registry equals the live nodes' state: members, room size, nodes.
        expected = {channel for i in range(len(nodes)) for channel in members[i]}
        victim_node = node_ids[2]

        async def converged() -> bool:
            listed = {m.channel for m in await sender.registry.members(GROUP)}
            live = {n.id for n in await sender.registry.nodes()}
            size = await sender.registry.room_size(GROUP)
            return listed == expected and size == len(expected) and victim_node not in live

        converged_from = time.monotonic()
        try:
            await eventually(converged, seconds=NODE_TTL + 10 * HEARTBEAT)
        finally:
            report["registry_converged_s"] = round(time.monotonic() - converged_from, 3)
            if os.environ.get("CHAOS_REPORT"):
                path = Path(os.environ["CHAOS_REPORT"])
                await asyncio.to_thread(path.write_text, json.dumps(report, indent=2))
        # A dropped idle pooled connection costs the sender nothing (retried before sending).
        # Only a send in flight while the connections were being killed may fail (its
        # PUBLISH may or may not have run, so it is not retried); none after the kill.
        kill = phases[0]
        refused = [s for s in log if s.n in set(kill.sends) and not s.ok]
        assert len(refused) <= 1, report
        assert all(s.started <= kill.fault_done_at for s in refused), (refused, report)
        for name, counts in report["phases"].items():
            assert counts["duplicated"] == 0, (name, counts)
            assert counts["reordered"] == 0, (name, counts)
            assert counts["lost_outside_window"] == 0, (name, counts)
    finally:
        await sender.close()
        for node in nodes:
            node.stop()
