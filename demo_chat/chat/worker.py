"""The chat's backend worker (seed 002: backends and nodes talk both ways through Redis).

Run it with ``python manage.py chat_worker`` (or ``runworker chat-commands``). Any node
sends chat commands to the durable channel ``chat-commands`` (CONFIG["durable_channels"]:
a command taken by a worker that dies is given to another after 5 s); whichever worker
takes one answers the room's lines (a group message, delivered on every node) or the
user alone (their channel). Whatever a command's arguments, the worker answers politely
and never raises.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Any

from channels.consumer import AsyncConsumer

from broadcast_layer import ChannelFull, RedisUnavailable

from .rooms import group_name, is_valid_room_name, lines_group

COMMANDS_CHANNEL = "chat-commands"
WORKER_NAME = "worker"
MIN_SIDES, MAX_SIDES, DEFAULT_SIDES = 2, 1000, 6
ROLL_USAGE = f"Usage: /roll [sides], with sides a whole number from {MIN_SIDES} to {MAX_SIDES}."
# ASCII digits only: str.isdigit() and int() also accept "²" or "٣", and "²" crashes int().
_SIDES_RE = re.compile(r"[0-9]{1,4}")
PRESENCE_LIMIT = 100

logger = logging.getLogger(__name__)


def parse_sides(args: str) -> int | None:
    """The number of sides ``/roll <args>`` asks for (6 when empty); None when invalid."""
    args = args.strip()
    if not args:
        return DEFAULT_SIDES
    if not _SIDES_RE.fullmatch(args):
        return None
    sides = int(args)
    return sides if MIN_SIDES <= sides <= MAX_SIDES else None


class CommandWorker(AsyncConsumer):  # type: ignore[misc]
    async def chat_command(self, event: dict[str, Any]) -> None:
        fields = [event.get(key) for key in ("command", "args", "room", "name", "reply_channel")]
        if not all(isinstance(field, str) for field in fields) or not is_valid_room_name(
            event["room"]
        ):
            logger.warning("Ignored a malformed chat command: %.200r", event)
            return
        command = event["command"]
        try:
            if command == "/roll":
                await self._roll(event)
            elif command == "/who":
                await self._who(event)
            else:
                await self._reply(event, f"Unknown command {command[:40]}. Try /roll or /who.")
        except (ChannelFull, RedisUnavailable, TypeError, ValueError) as exc:
            # The asker's tab closed, its queue is full, or Redis is away: nothing to crash for.
            logger.warning("Could not answer %.40s: %r", command, exc)

    async def _roll(self, event: dict[str, Any]) -> None:
        sides = parse_sides(event["args"])
        if sides is None:
            await self._reply(event, ROLL_USAGE)
            return
        text = f"{event['name']} rolled {random.randint(1, sides)} (1-{sides})"
        await self.channel_layer.group_send(
            lines_group(event["room"]), {"type": "chat.message", "text": text, "node": WORKER_NAME}
        )

    async def _who(self, event: dict[str, Any]) -> None:
        group = group_name(event["room"])
        members = await self.channel_layer.registry.members(group, limit=PRESENCE_LIMIT)
        names = sorted(str(m.metadata.get("name", "?")) for m in members)
        more = "" if len(names) < PRESENCE_LIMIT else " and more"
        await self._reply(event, f"In {event['room']}: {', '.join(names) or 'nobody'}{more}")

    async def _reply(self, event: dict[str, Any], text: str) -> None:
        """Answer the user who asked, and nobody else."""
        await self.channel_layer.send(
            event["reply_channel"], {"type": "chat.private", "text": text}
        )
