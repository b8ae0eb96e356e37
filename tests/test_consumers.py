"""The consumer mixins: what they change in a real consumer's dispatch."""

from __future__ import annotations

from typing import Any

import pytest
from channels.consumer import AsyncConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator

from broadcast_layer.consumers import NoPerMessageDatabaseCleanupMixin


class Echo(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    channel_layer_alias = "not-configured"  # dispatch is under test, not the layer

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(content)


class LeanEcho(NoPerMessageDatabaseCleanupMixin, Echo):
    pass


@pytest.fixture
def cleanups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts Channels' per-message database clean-ups (the hop to a worker thread)."""
    import channels.consumer

    calls: list[int] = []
    original = channels.consumer.aclose_old_connections

    async def counted() -> None:
        calls.append(1)
        await original()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    return calls


async def _echo_three(consumer: type[AsyncConsumer]) -> list[Any]:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    connected, _ = await communicator.connect()
    assert connected
    for n in range(3):
        await communicator.send_json_to({"n": n})
    replies = [await communicator.receive_json_from() for _ in range(3)]
    await communicator.disconnect()
    return replies


@pytest.mark.django_db
async def test_default_dispatch_cleans_up_database_connections_per_message(cleanups):
    assert await _echo_three(Echo) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert len(cleanups) >= 4  # connect and each frame: what the mixin removes


@pytest.mark.django_db
async def test_mixin_dispatches_the_same_messages_without_the_per_message_hop(cleanups):
    assert await _echo_three(LeanEcho) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert cleanups == []


async def test_mixin_still_refuses_a_message_without_a_handler():
    consumer = LeanEcho()
    with pytest.raises(ValueError, match=r"No handler for message type nope\.nothing"):
        await consumer.dispatch({"type": "nope.nothing"})
