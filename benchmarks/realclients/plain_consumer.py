"""A plain chat consumer: group_add, group_send and nothing else, so it runs on any layer.

It speaks the demo's protocol (client sends ``{"text": ...}``, gets
``{"type": "message", "text": ...}``) so one client drives both; it makes no registry
call, which channels_redis's layers do not have.
"""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer


class PlainChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    group = ""

    async def connect(self) -> None:
        self.group = "chat." + self.scope["url_route"]["kwargs"]["room_name"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            text = json.loads(text_data or "")["text"]
        except (ValueError, KeyError, TypeError):
            return
        await self.channel_layer.group_send(self.group, {"type": "chat.message", "text": text})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"type": "message", "text": event["text"]}))
