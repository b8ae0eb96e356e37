"""The chat's WebSocket consumer: one per browser tab, joined to its room's group.

Client -> server: ``{"text": "..."}`` (a line starting with ``/`` is a command for the
worker) and ``{"type": "presence"}`` (ask for the member list again; the page never
needs to).
Server -> client: ``message`` (with the line's ``offset`` and ``epoch``: the page keeps
the last ones and gives them back when it reconnects, see HistoryRecoveryMixin),
``history.recovered``, ``announcement``, ``private``, ``error``, and the
presence list: ``presence`` (the whole list, once on join), then ``presence.diff``
(who joined or left on one node) and ``presence.gone`` (nodes that died); see
presence.py.

Every frame a client sends costs it a token (chat lines and presence requests have
separate buckets); a frame without a token gets a polite ``error`` and is dropped, and
a connection that keeps sending regardless is closed with code 1008.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from broadcast_layer.consumers import (
    HistoryRecoveryMixin,
    NoPerMessageDatabaseCleanupMixin,
    RemoteControlMixin,
)

from . import presence
from .rooms import (
    SESSION_NAME_KEY,
    clean_display_name,
    group_name,
    guest_name,
    is_valid_room_name,
    lines_group,
)
from .worker import COMMANDS_CHANNEL

MAX_TEXT_LENGTH = 2000
#: The largest frame read at all: a JSON line of MAX_TEXT_LENGTH escaped characters.
MAX_FRAME_LENGTH = 6 * MAX_TEXT_LENGTH + 100
#: Per connection: a burst of CHAT_BURST lines (or commands), refilled at CHAT_RATE a second.
CHAT_RATE, CHAT_BURST = 3.0, 10.0
#: A presence request answers with the member list (two registry reads). The page never
#: needs one (it reads the list on joining, then applies diffs), so a client asking
#: often is polling, which the diffs replace: 3 at once, then one every 10 seconds.
PRESENCE_RATE, PRESENCE_BURST = 0.1, 3.0
#: Refused frames tolerated (refilled slowly) before the connection is closed.
PATIENCE_RATE, PATIENCE_BURST = 0.2, 20.0
#: At most this many members in a presence list, whatever the room's size.
PRESENCE_LIMIT = presence.PRESENCE_LIMIT
POLICY_VIOLATION = 1008  # WebSocket close code: the client broke the rules

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


# Its handlers never use the ORM (the user and session are loaded by the auth
# middleware, through database_sync_to_async): no per-message clean-up hop is needed.
# HistoryRecoveryMixin comes first: it sees every message before it is dispatched.
class ChatConsumer(  # type: ignore[misc]
    HistoryRecoveryMixin,
    NoPerMessageDatabaseCleanupMixin,
    RemoteControlMixin,
    AsyncJsonWebsocketConsumer,
):
    #: A new page shows the room's last lines; a reconnecting one, what it missed.
    history_on_join = 100
    #: The page gives its position in the URL only: no unrated recover frames.
    recover_frames = False
    room: str | None = None
    group: str | None = None
    name: str = ""
    closing = False

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        # Checked before RemoteControlMixin joins its groups: a refused socket joins none.
        if not is_valid_room_name(self.scope["url_route"]["kwargs"]["room_name"]):
            await self.close()  # before accept(): the handshake is rejected with a 403
            return
        await super().websocket_connect(message)

    async def connect(self) -> None:
        room = self.scope["url_route"]["kwargs"]["room_name"]
        self.room, self.group = room, group_name(room)  # "chat.<room>", never another group
        self.name = self._display_name()
        self.chat_bucket = TokenBucket(CHAT_RATE, CHAT_BURST)
        self.presence_bucket = TokenBucket(PRESENCE_RATE, PRESENCE_BURST)
        self.patience = TokenBucket(PATIENCE_RATE, PATIENCE_BURST)
        # group_add returns once the subscription is confirmed, so a client whose
        # handshake has completed already receives everything sent to the room.
        await self.channel_layer.group_add(self.group, self.channel_name)
        metadata = {"name": self.name, "node": NODE_NAME}
        await self.set_metadata(**metadata)  # the registry shows it
        layer = self.channel_layer
        # Batched with this node's other joins into the room's next presence.diff.
        presence.hub(layer).joined(
            self.group, self.channel_name,
            presence.person(self.channel_name, layer.node_id, metadata),
        )  # fmt: skip
        await self.accept()
        # Diffs sent meanwhile wait in this channel's mailbox and are applied after the
        # list: they are idempotent, so one the list already reflects changes nothing.
        await self.send_json(await presence.snapshot(layer, self.group))

    def history_groups(self) -> list[str]:
        """The room's chat lines (joined after connect(), once the socket is accepted)."""
        return [lines_group(self.room)] if self.room is not None else []

    def _display_name(self) -> str:
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            chosen: object = str(user.get_username())
        else:
            session = self.scope.get("session")
            chosen = session.get(SESSION_NAME_KEY) if session is not None else None
        return clean_display_name(chosen) or guest_name()

    async def disconnect(self, code: int) -> None:
        # RemoteControlMixin has already left every group; the room hears it in a diff.
        if self.group is not None:
            presence.hub(self.channel_layer).left(self.group, self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        # Never let the base class parse: it raises on binary frames and bad JSON,
        # which would tear the connection down with a traceback.
        if self.group is None or self.closing:
            return
        content = _parse(text_data)
        is_presence = isinstance(content, dict) and content.get("type") == "presence"
        bucket = self.presence_bucket if is_presence else self.chat_bucket
        if not bucket.allow():
            await self._refuse("Slow down: too many requests." if is_presence
                               else "Slow down: too many messages.")  # fmt: skip
        elif is_presence:
            await self.send_json(await presence.snapshot(self.channel_layer, self.group))
        elif text_data is not None and len(text_data) > MAX_FRAME_LENGTH:
            await self._refuse(f"Messages are limited to {MAX_TEXT_LENGTH} characters.")
        elif isinstance(content, dict):
            await self._chat(content)
        # anything else (binary, not JSON, not an object) is ignored, its token spent

    async def _chat(self, content: dict[str, Any]) -> None:
        text = content.get("text")
        if not isinstance(text, str) or not text.strip():
            return
        if len(text) > MAX_TEXT_LENGTH:
            await self._refuse(f"Messages are limited to {MAX_TEXT_LENGTH} characters.")
            return
        if text.startswith("/"):
            await self._command(text)
            return
        await self.channel_layer.group_send(
            lines_group(self.room),  # type: ignore[arg-type]
            {"type": "chat.message", "text": text, "node": NODE_NAME, "name": self.name},
        )

    async def _refuse(self, text: str) -> None:
        """Answer a refused frame politely; close a connection that keeps at it."""
        if self.patience.allow():
            await self.send_json({"type": "error", "text": text})
            return
        self.closing = True
        await self.send_json({"type": "error", "text": "Too many refused messages: goodbye."})
        await self.close(code=POLICY_VIOLATION)

    async def _command(self, text: str) -> None:
        command, _, args = text.partition(" ")
        try:
            await self.channel_layer.send(COMMANDS_CHANNEL, {
                "type": "chat.command", "command": command.lower(), "args": args.strip(),
                "room": self.room, "name": self.name, "reply_channel": self.channel_name,
            })  # fmt: skip
        except ChannelFull:
            await self.send_json({"type": "error", "text": "The worker is busy; try again."})

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A chat line, live or recovered, with its offset and epoch for the page to keep."""
        kept = event.get("history") or {}
        await self.send_json({"type": "message", "text": event["text"], "node": event["node"],
                              "name": event.get("name", ""), "offset": kept.get("offset"),
                              "epoch": kept.get("epoch")})  # fmt: skip

    async def chat_private(self, event: dict[str, Any]) -> None:
        """A worker's answer to this user alone."""
        await self.send_json({"type": "private", "text": event["text"]})

    async def presence_diff(self, event: dict[str, Any]) -> None:
        """A node's batch of joins and leaves in this room: passed on as it is."""
        await self.send_json({key: event[key] for key in ("node_id", "count", "joined", "left")}
                             | {"type": "presence.diff"})  # fmt: skip

    async def presence_gone(self, event: dict[str, Any]) -> None:
        """Nodes that died (from this node's watch): their people leave the list."""
        await self.send_json({"type": "presence.gone", "node_ids": event["node_ids"]})

    async def broadcast_message(self, event: dict[str, Any]) -> None:
        """`manage.py broadcast chat.ROOM TEXT` (or the emitter): shown as an announcement."""
        await self.send_json({"type": "announcement", "text": str(event.get("text", ""))})


def _parse(text_data: str | None) -> Any:
    """The JSON value of a text frame; None for a binary, oversized or malformed one."""
    if text_data is None or len(text_data) > MAX_FRAME_LENGTH:
        return None
    try:
        return json.loads(text_data)
    except ValueError:
        return None
