"""The chat's WebSocket consumer: one per browser tab, joined to its room's group.

Client -> server: ``{"text": "..."}``.
Server -> client: ``{"type": "message", "text": ..., "node": ...}`` for chat messages and
``{"type": "announcement", "text": ...}`` for broadcasts sent from outside the chat.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from broadcast_layer.consumers import RemoteControlMixin

from .rooms import group_name, is_valid_room_name

MAX_TEXT_LENGTH = 2000

# Which server process relayed a message, so the demo shows messages crossing nodes.
NODE_NAME = os.environ.get("NODE_NAME") or f"{socket.gethostname()}:{os.getpid()}"


class ChatConsumer(RemoteControlMixin, AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    group: str | None = None

    async def connect(self) -> None:
        room = self.scope["url_route"]["kwargs"]["room_name"]
        if not is_valid_room_name(room):
            await self.close()  # before accept(): the handshake is rejected with a 403
            return
        self.group = group_name(room)
        # group_add returns once the subscription is confirmed, so a client whose
        # handshake has completed already receives everything sent to the room.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.set_metadata(node=NODE_NAME)  # shown by the registry with the member
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        # The base class raises on binary frames and malformed JSON, which would tear
        # the connection down with a traceback; a client's bad input is just ignored.
        if text_data is None:
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        text = content.get("text") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text.strip() or self.group is None:
            return
        await self.channel_layer.group_send(
            self.group,
            {"type": "chat.message", "text": text[:MAX_TEXT_LENGTH], "node": NODE_NAME},
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "message", "text": event["text"], "node": event["node"]})

    async def broadcast_message(self, event: dict[str, Any]) -> None:
        """`manage.py broadcast ROOM TEXT` (or the emitter): shown as an announcement."""
        await self.send_json({"type": "announcement", "text": str(event.get("text", ""))})
