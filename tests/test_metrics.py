"""Prometheus metrics after real traffic against real Redis (counter deltas), the send
time stamp's compatibility, metrics off, and multi-process mode with two processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import redis
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from broadcast_layer import BroadcastChannelLayer
from broadcast_layer._metrics import STAMP, recorder
from broadcast_layer.contrib.embedded import EmbeddedRedis

from . import faults
from .conftest import eventually, nothing_arrives, within

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not recorder.enabled, reason="metrics are off in this run")


def value(name: str, registry: CollectorRegistry = REGISTRY, **labels: str) -> float:
    """A sample's current value (0 when it has not been recorded yet)."""
    return registry.get_sample_value(name, labels) or 0.0


class Deltas:
    """Sample values at creation; :meth:`of` is how much each grew since."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self._before = {(name, tuple(sorted(labels.items()))): value(name, **labels)
                        for name, labels in samples}  # fmt: skip

    def of(self, name: str, **labels: str) -> float:
        return value(name, **labels) - self._before[(name, tuple(sorted(labels.items())))]


PUBLISHED = ("broadcast_layer_messages_published_total", {"kind": "group"})
DELIVERED = ("broadcast_layer_messages_delivered_total", {"kind": "group"})
DIRECT = ("broadcast_layer_messages_delivered_total", {"kind": "direct"})
FULL = ("broadcast_layer_messages_dropped_total", {"reason": "mailbox_full"})
REJECTED = ("broadcast_layer_messages_dropped_total", {"reason": "rejected"})
LAG = ("broadcast_layer_delivery_lag_seconds_count", {})
CHANNELS = ("broadcast_layer_local_channels", {})
SUBSCRIPTIONS = ("broadcast_layer_subscriptions", {})
CONNECTED = ("broadcast_layer_pubsub_connections", {"state": "connected"})
RECONNECTS = ("broadcast_layer_pubsub_reconnects_total", {})
JOIN_CALLS = ("broadcast_layer_registry_call_duration_seconds_count", {"call": "pipeline"})
ROOM_SIZE_CALLS = ("broadcast_layer_registry_call_duration_seconds_count", {"call": "ROOM_SIZE"})


async def test_counters_gauges_and_histograms_after_real_traffic(make_layer):
    deltas = Deltas(PUBLISHED, DELIVERED, DIRECT, LAG, CHANNELS, SUBSCRIPTIONS, CONNECTED,
                    JOIN_CALLS, ROOM_SIZE_CALLS)  # fmt: skip
    sender, receiver = make_layer(), make_layer()
    channels = [await receiver.new_channel() for _ in range(3)]
    for channel in channels:
        await receiver.group_add("room", channel)
    assert deltas.of(CHANNELS[0]) == 3
    assert deltas.of(SUBSCRIPTIONS[0]) == 2  # the group and the node's own channel
    assert deltas.of(CONNECTED[0], **CONNECTED[1]) == 1
    assert deltas.of(JOIN_CALLS[0], **JOIN_CALLS[1]) >= 1

    for n in range(5):
        await sender.group_send("room", {"type": "m", "n": n})
    for channel in channels:
        for n in range(5):
            message = await within(receiver.receive(channel))
            assert message == {"type": "m", "n": n}  # the stamp never reaches a consumer
    await sender.send(channels[0], {"type": "direct"})
    assert (await within(receiver.receive(channels[0])))["type"] == "direct"
    assert await sender.registry.room_size("room") == 3

    assert deltas.of(PUBLISHED[0], **PUBLISHED[1]) == 5
    assert deltas.of(DELIVERED[0], **DELIVERED[1]) == 15
    assert deltas.of(DIRECT[0], **DIRECT[1]) == 1
    assert deltas.of(LAG[0]) == 5  # once per message and receiving node, not per member
    assert deltas.of(ROOM_SIZE_CALLS[0], **ROOM_SIZE_CALLS[1]) == 1

    await receiver.close()
    assert deltas.of(CHANNELS[0]) == 0
    assert deltas.of(SUBSCRIPTIONS[0]) == 0
    assert deltas.of(CONNECTED[0], **CONNECTED[1]) == 0


async def test_drops_are_counted_by_reason(make_layer, redis_url, prefix):
    deltas = Deltas(FULL, REJECTED)
    sender, receiver = make_layer(), make_layer(capacity=2)
    channel = await receiver.new_channel()
    await receiver.group_add("room", channel)
    for n in range(5):
        await sender.group_send("room", {"type": "m", "n": n})
    client = redis.Redis.from_url(redis_url)
    try:  # an external publisher's garbage: not msgpack
        client.publish(f"{prefix}:group:room", b"\xc1 not msgpack")
    finally:
        client.close()
    await eventually(lambda: deltas.of(FULL[0], **FULL[1]) == 3 and deltas.of(
        REJECTED[0], **REJECTED[1]) == 1)  # fmt: skip
    assert [(await receiver.receive(channel))["n"] for _ in range(2)] == [0, 1]


@pytest.mark.slow
async def test_a_killed_pubsub_connection_counts_one_reconnect():
    deltas = Deltas(RECONNECTS, CONNECTED)
    with EmbeddedRedis() as server:
        layer = BroadcastChannelLayer(hosts=[server.url], prefix="m")
        try:
            channel = await layer.new_channel()
            await layer.group_add("room", channel)
            await asyncio.to_thread(faults.kill_clients, server.url, "pubsub")
            await eventually(lambda: deltas.of(RECONNECTS[0]) == 1, 20)
            await eventually(lambda: deltas.of(CONNECTED[0], **CONNECTED[1]) == 1, 20)
        finally:
            await layer.close()


async def test_group_messages_carry_the_send_time_and_unstamped_ones_still_arrive(
    make_layer, redis_url, prefix
):
    """The stamp is one more map key; a message from an older node or an external
    publisher has none and is delivered as before, without a lag observation."""
    sender, receiver = make_layer(), make_layer()
    channel = await receiver.new_channel()
    await receiver.group_add("room", channel)
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(f"{prefix}:group:room")
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        await sender.group_send("room", {"type": "m"})
        raw = await asyncio.to_thread(pubsub.get_message, timeout=5)
        stamped = msgpack.unpackb(raw["data"])
        assert stamped["type"] == "m"
        assert isinstance(stamped[STAMP], float)
        # Received, so the node has observed its lag: the count moves no more for it.
        assert await within(receiver.receive(channel)) == {"type": "m"}

        before = value(LAG[0])
        client.publish(f"{prefix}:group:room", msgpack.packb({"type": "old", "x": 1}))
    finally:
        pubsub.close()
        client.close()
    assert await within(receiver.receive(channel)) == {"type": "old", "x": 1}
    assert value(LAG[0]) == before
    await nothing_arrives(receiver, channel, 0.1)


def test_metrics_off_by_environment_or_without_prometheus_client_bind_no_ops():
    check = (
        "import sys, broadcast_layer._metrics as m; "
        "assert type(m.recorder) is m.Recorder, m.recorder; "
        "msg = {'type': 'x'}; assert m.recorder.stamp(msg) is msg; "
        "assert 'prometheus_client' not in sys.modules or sys.modules['prometheus_client'] is None"
    )
    off = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "BROADCAST_LAYER_METRICS": "0"}, timeout=60,
    )  # fmt: skip
    assert off.returncode == 0, off.stderr
    missing = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['prometheus_client'] = None; " + check],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 0, missing.stderr


@pytest.mark.slow
async def test_multiprocess_mode_sums_two_processes(make_layer, node_processes, tmp_path):
    """Two node processes write to one PROMETHEUS_MULTIPROC_DIR; a collector over it
    (what a /metrics view does in multi-process mode) sees the sum of both."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    workers = [await asyncio.to_thread(node_processes, env=env) for _ in range(2)]
    for worker in workers:
        channel = (await asyncio.to_thread(worker.ask, op="new_channel"))["channel"]
        await asyncio.to_thread(worker.ask, op="group_add", group="room", channel=channel)
        await asyncio.to_thread(worker.ask, op="collect", channel=channel)
    sender = make_layer()
    for n in range(7):
        assert await sender.group_send("room", {"type": "m", "n": n}) == 2

    def received() -> list[int]:
        counts = []
        for worker in workers:
            report = worker.ask(op="report")["received"]
            counts.append(sum(len(numbers) for numbers in report.values()))
        return counts

    async def both_have_all() -> bool:
        return await asyncio.to_thread(received) == [7, 7]

    await eventually(both_have_all, 20)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert value("broadcast_layer_messages_delivered_total", registry, kind="group") == 14
    assert value("broadcast_layer_delivery_lag_seconds_count", registry) == 14
    assert value("broadcast_layer_local_channels", registry) == 2
    assert value("broadcast_layer_subscriptions", registry) == 4  # a group + a node channel, x2
    assert value("broadcast_layer_pubsub_connections", registry, state="connected") == 2


async def test_the_metrics_view_exposes_them_in_the_prometheus_text_format(make_layer):
    from django.test import AsyncClient

    await make_layer().group_send("nobody-here", {"type": "m"})
    response = await within(AsyncClient().get("/metrics"), 15)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'broadcast_layer_messages_published_total{kind="group"}' in text
    assert "# TYPE broadcast_layer_delivery_lag_seconds histogram" in text


def test_every_metric_is_documented_and_the_dashboard_names_only_real_ones():
    import json
    import re

    families = {f.name for f in REGISTRY.collect() if f.name.startswith("broadcast_layer_")}
    counters = {f.name for f in REGISTRY.collect() if f.type == "counter"}
    exposed = {name + "_total" if name in counters else name for name in families}
    assert len(exposed) == 11
    table = (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(broadcast_layer_\w+)` \|", table, re.MULTILINE))
    assert documented == exposed
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    used = set(re.findall(r"broadcast_layer_\w+", json.dumps(dashboard)))
    suffixes = re.compile(r"_(bucket|count|sum)$")
    assert {suffixes.sub("", name) for name in used} <= exposed
    assert {suffixes.sub("", name) for name in used} == exposed  # every metric has a panel
