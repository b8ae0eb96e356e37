"""layer.health(): a real round trip through the node's own pub/sub connection; the
health view's status codes and the broadcast_health command's exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import AsyncClient

from broadcast_layer import BroadcastChannelLayer
from broadcast_layer.contrib.embedded import EmbeddedRedis

from . import faults
from .conftest import within

ROOT = Path(__file__).resolve().parent.parent


def closed_port_url() -> str:
    """A Redis URL on a loopback port nothing listens on (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def test_health_with_redis_up_is_a_round_trip_on_the_nodes_own_connection(layer):
    report = await within(layer.health(timeout=5.0), 15)
    assert report.ok, report
    assert report.error is None
    assert report.node_id == layer.node_id
    assert report.latency is not None
    assert report.latency > 0
    assert report.pubsub == ("connected",)
    assert report.as_dict()["ok"] is True


@pytest.mark.slow
async def test_health_after_redis_is_sigkilled_answers_not_ok_within_the_timeout():
    with EmbeddedRedis() as server:
        layer = BroadcastChannelLayer(hosts=[server.url], prefix="health")
        try:
            assert (await within(layer.health(timeout=5.0), 15)).ok
            faults.sigkill(server.pid)
            loop = asyncio.get_running_loop()
            started = loop.time()
            # Bounded generously (a loaded machine), but far below redis-py's own timeouts.
            report = await within(layer.health(timeout=1.0), 10)
            waited = loop.time() - started
            assert not report.ok
            assert report.error
            assert report.latency is None
            # report.pubsub is not asserted: the reader may not have seen the reset yet
            # ("connected" at that instant); the probe's failed round trip reports it.
            assert waited < 10
        finally:
            await layer.close()


async def test_health_when_redis_was_never_reachable_is_not_ok():
    layer = BroadcastChannelLayer(hosts=[closed_port_url()], prefix="health")
    try:
        report = await within(layer.health(timeout=1.0), 10)
        assert not report.ok
        assert report.error
    finally:
        await layer.close()


async def test_health_rejects_a_timeout_that_is_not_a_positive_number(layer):
    for bad in (0, -1.0, float("inf"), float("nan"), "2"):
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            await layer.health(timeout=bad)


@pytest.fixture
def two_aliases(settings, redis_url, prefix):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        },
        "down": {
            "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
            "CONFIG": {"hosts": [closed_port_url()], "prefix": prefix},
        },
    }


async def test_health_view_answers_200_with_redis_up_and_503_when_down(two_aliases):
    from channels.layers import channel_layers

    client = AsyncClient()
    try:
        up = await within(client.get("/healthz"), 15)
        assert up.status_code == 200
        assert up["Content-Type"] == "application/json"
        assert json.loads(up.content)["ok"] is True
        down = await within(client.get("/healthz/down"), 15)
        assert down.status_code == 503
        body = json.loads(down.content)
        assert body["ok"] is False
        assert body["error"]
    finally:
        for alias in ("default", "down"):
            await channel_layers[alias].close()


def test_health_command_prints_ok_or_raises_command_error(two_aliases, capsys):
    call_command("broadcast_health")
    assert capsys.readouterr().out.startswith("ok: node ")
    call_command("broadcast_health", "--format", "json", "--timeout", "5")
    assert json.loads(capsys.readouterr().out)["ok"] is True
    with pytest.raises(CommandError, match="unhealthy"):
        call_command("broadcast_health", "--layer", "down", "--timeout", "0.5")


@pytest.mark.slow
def test_health_command_exit_status_is_0_when_healthy_and_1_when_not(redis_url, prefix):
    def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "REDIS_URL": url,
               "BROADCAST_TEST_PREFIX": prefix}  # fmt: skip
        return subprocess.run(
            [sys.executable, "manage.py", "broadcast_health", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    healthy = run(redis_url, "--format", "json")
    assert healthy.returncode == 0, healthy.stderr
    assert json.loads(healthy.stdout)["ok"] is True
    sick = run(closed_port_url(), "--format", "json", "--timeout", "0.5")
    assert sick.returncode == 1
    assert json.loads(sick.stdout)["ok"] is False
    assert "unhealthy" in sick.stderr
