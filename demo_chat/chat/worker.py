"""The chat's backend worker (seed 002: backends and nodes talk both ways through Redis).

Run it with ``python manage.py runworker chat-commands``. Any node sends chat commands
to the normal channel ``chat-commands``; whichever worker takes one answers the room
(a group message, delivered on every node) or the user alone (their channel).
"""

from __future__ import annotations

import random
from typing import Any

from channels.consumer import AsyncConsumer

COMMANDS_CHANNEL = "chat-commands"
WORKER_NAME = "worker"


class CommandWorker(AsyncConsumer):  # type: ignore[misc]
    async def chat_command(self, event: dict[str, Any]) -> None:
        command, args = event["command"], event.get("args", "")
        if command == "/roll":
            await self._roll(event, args)
        elif command == "/who":
            await self._who(event)
        else:
            await self._reply(event, f"Unknown command {command}. Try /roll or /who.")

    async def _roll(self, event: dict[str, Any], args: str) -> None:
        sides = int(args) if args.isdigit() and 1 < int(args) <= 1000 else 6
        text = f"{event['name']} rolled {random.randint(1, sides)} (1-{sides})"
        await self.channel_layer.group_send(
            event["room"], {"type": "chat.message", "text": text, "node": WORKER_NAME}
        )

    async def _who(self, event: dict[str, Any]) -> None:
        members = await self.channel_layer.registry.members(event["room"])
        names = sorted(str(m.metadata.get("name", "?")) for m in members)
        await self._reply(event, f"In {event['room']}: {', '.join(names) or 'nobody'}")

    async def _reply(self, event: dict[str, Any], text: str) -> None:
        """Answer the user who asked, and nobody else."""
        await self.channel_layer.send(
            event["reply_channel"], {"type": "chat.private", "text": text}
        )
