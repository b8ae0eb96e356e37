"""The chat's WebSocket consumer: one per browser tab, joined to its room's group.

Client -> server: ``{"text": "..."}`` (a line starting with ``/`` is a command for the
worker) and ``{"type": "presence"}`` (ask for the member list again).
Server -> client: ``message``, ``announcement``, ``private``, ``presence`` and
``error`` objects, each with a ``type``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from broadcast_layer.consumers import RemoteControlMixin

from .rooms import SESSION_NAME_KEY, clean_display_name, group_name, guest_name, is_valid_room_name
from .worker import COMMANDS_CHANNEL

MAX_TEXT_LENGTH = 2000
#: Per connection: a burst of RATE_BURST messages, refilled at RATE_PER_SECOND.
RATE_PER_SECOND = 3.0
RATE_BURST = 10.0

# Which server process relayed a message, so the demo shows messages crossing nodes.
NODE_NAME = os.environ.get("NODE_NAME") or f"{socket.gethostname()}:{os.getpid()}"


class TokenBucket:
    """A small rate limiter: ``allow()`` spends one token if one is left."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ChatConsumer(RemoteControlMixin, AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    group: str | None = None
    name: str = ""

    async def connect(self) -> None:
        room = self.scope["url_route"]["kwargs"]["room_name"]
        if not is_valid_room_name(room):
            await self.close()  # before accept(): the handshake is rejected with a 403
            return
        self.group = group_name(room)
        self.name = self._display_name()
        self.bucket = TokenBucket(RATE_PER_SECOND, RATE_BURST)
        # group_add returns once the subscription is confirmed, so a client whose
        # handshake has completed already receives everything sent to the room.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.set_metadata(name=self.name, node=NODE_NAME)  # the registry shows it
        await self.accept()
        await self.channel_layer.group_send(self.group, {"type": "presence.changed"})

    def _display_name(self) -> str:
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            return str(user.get_username())[:40]
        session = self.scope.get("session")
        chosen = session.get(SESSION_NAME_KEY) if session is not None else None
        return clean_display_name(chosen) or guest_name()

    async def disconnect(self, code: int) -> None:
        # RemoteControlMixin has already left every group; tell the room.
        if self.group is not None:
            await self.channel_layer.group_send(self.group, {"type": "presence.changed"})

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
        if not isinstance(content, dict) or self.group is None:
            return
        if content.get("type") == "presence":
            await self.presence_changed({})
            return
        text = content.get("text")
        if not isinstance(text, str) or not text.strip():
            return
        if not self.bucket.allow():
            await self.send_json({"type": "error", "text": "Slow down: too many messages."})
            return
        text = text[:MAX_TEXT_LENGTH]
        if text.startswith("/"):
            await self._command(text)
            return
        await self.channel_layer.group_send(
            self.group,
            {"type": "chat.message", "text": text, "node": NODE_NAME, "name": self.name},
        )

    async def _command(self, text: str) -> None:
        command, _, args = text.partition(" ")
        try:
            await self.channel_layer.send(COMMANDS_CHANNEL, {
                "type": "chat.command", "command": command.lower(), "args": args.strip(),
                "room": self.group, "name": self.name, "reply_channel": self.channel_name,
            })  # fmt: skip
        except ChannelFull:
            await self.send_json({"type": "error", "text": "The worker is busy; try again."})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "message", "text": event["text"], "node": event["node"],
                              "name": event.get("name", "")})  # fmt: skip

    async def chat_private(self, event: dict[str, Any]) -> None:
        """A worker's answer to this user alone."""
        await self.send_json({"type": "private", "text": event["text"]})

    async def presence_changed(self, event: dict[str, Any]) -> None:
        """Someone joined or left: send the member list, as the registry has it."""
        members = await self.channel_layer.registry.members(self.group)
        people = sorted(
            ({"name": str(m.metadata.get("name", "?")), "node": str(m.metadata.get("node", ""))}
             for m in members),
            key=lambda person: (person["name"], person["node"]),
        )  # fmt: skip
        await self.send_json({"type": "presence", "members": people})

    async def broadcast_message(self, event: dict[str, Any]) -> None:
        """`manage.py broadcast ROOM TEXT` (or the emitter): shown as an announcement."""
        await self.send_json({"type": "announcement", "text": str(event.get("text", ""))})
