"""Consumers for the end-to-end tests (routed by ``tests/asgi.py``)."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer


class CrashingConsumer(AsyncJsonWebsocketConsumer):
    """Joins the room named in the URL and tells the client its channel name.

    ``{"op": "crash"}`` sends this consumer a channel-layer message whose handler
    raises: Channels then stops receiving on the channel without cancelling anything,
    and Daphne closes the socket (1011), as with any bug in a handler.
    """

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()
        await self.send_json({"type": "joined", "channel": self.channel_name})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("op") == "crash":
            await self.channel_layer.send(self.channel_name, {"type": "room.crash"})

    async def room_crash(self, event: dict[str, Any]) -> None:
        raise RuntimeError("a bug in a handler (the test asked for it)")

    async def room_message(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.room, self.channel_name)
