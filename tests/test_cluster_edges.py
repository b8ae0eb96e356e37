"""Smoke tests of the edges on a real local Redis Cluster: ``manage.py broadcast`` and
``rooms``, the admin's Rooms, room and Nodes pages with its send action."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from broadcast_layer import BroadcastChannelLayer

from .cluster import RedisCluster
from .conftest import within

pytestmark = pytest.mark.django_db(transaction=True)  # requests run in another thread
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def member(settings, redis_cluster: RedisCluster, prefix) -> AsyncIterator[tuple]:
    """A layer on the cluster with one member in "lobby"; CHANNEL_LAYERS points there."""
    config = {"hosts": [redis_cluster.url], "cluster": True, "prefix": prefix}
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "broadcast_layer.layer.BroadcastChannelLayer", "CONFIG": config}
    }
    layer = BroadcastChannelLayer(**config)
    channel = await layer.new_channel()
    await layer.set_channel_metadata(channel, {"name": "Ann"})
    await layer.group_add("lobby", channel)
    yield layer, channel
    await layer.close()


async def test_the_commands(member):
    layer, channel = member
    out = StringIO()
    await asyncio.to_thread(call_command, "broadcast", "lobby", "hello", stdout=out)
    assert out.getvalue().strip() == "lobby: published to 1 node, 1 member"
    assert (await within(layer.receive(channel)))["text"] == "hello"
    out = StringIO()
    await asyncio.to_thread(call_command, "rooms", "--format", "json", stdout=out)
    rooms = json.loads(out.getvalue())
    assert [(room["name"], room["size"]) for room in rooms["rooms"]] == [("lobby", 1)]


def _operator(django_user_model) -> Client:
    user = django_user_model.objects.create(username="operator", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="broadcast_layer"))
    client = Client()
    client.force_login(user)
    return client


async def test_the_admin(member, django_user_model):
    layer, channel = member
    client = await asyncio.to_thread(_operator, django_user_model)
    rooms = await asyncio.to_thread(client.get, reverse("admin:broadcast_layer_room_changelist"))
    assert [room.name for room, _ in rooms.context["rows"]] == ["lobby"]
    room_url = reverse("admin:broadcast_layer_room_change", args=[quote("lobby")])
    page = await asyncio.to_thread(client.get, room_url)
    assert [row.name for row in page.context["members"]] == ["Ann"]
    nodes = await asyncio.to_thread(client.get, reverse("admin:broadcast_layer_node_changelist"))
    assert layer.node_id in nodes.content.decode()
    sent = await asyncio.to_thread(
        client.post, room_url, {"type": "chat.message", "text": "from the admin"}
    )
    assert sent.status_code == 302
    assert await within(layer.receive(channel)) == {
        "type": "chat.message",
        "text": "from the admin",
    }


async def test_the_demo_runs_on_a_cluster_named_by_redis_cluster(redis_cluster, tmp_path):
    """REDIS_CLUSTER makes the demo's settings use the cluster: `manage.py broadcast` with
    the demo's settings reaches a member on the cluster under the demo's prefix."""
    layer = BroadcastChannelLayer(hosts=[redis_cluster.url], cluster=True)  # the demo's prefix
    try:
        channel = await layer.new_channel()
        await layer.group_add("demo-cluster-smoke", channel)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo_chat.settings",
               "REDIS_CLUSTER": f"{redis_cluster.url}, redis://127.0.0.1:1",
               "DEMO_DB_PATH": str(tmp_path / "db.sqlite3")}  # fmt: skip
        env.pop("REDIS_URL", None)
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "manage.py", "broadcast", "demo-cluster-smoke", "hi"],
            cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "published to 1 node" in result.stdout
        assert (await within(layer.receive(channel)))["text"] == "hi"
    finally:
        await layer.close()
