"""``manage.py chat_worker``: answer chat commands, each acknowledged after its answer.

``chat-commands`` is a durable channel (CONFIG["durable_channels"]): a message stays
pending until this process receives again. This loop receives again only once it has
answered, so a worker killed during a ``/roll`` leaves the roll pending, and another
worker answers it ``claim_after`` (5 s) later. ``runworker chat-commands`` also works,
but it receives again as soon as it has queued a message, before the answer.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand

from ...worker import COMMANDS_CHANNEL, CommandWorker


async def serve(stop: asyncio.Event) -> None:
    """Answer chat commands until ``stop`` is set, then close the layer (acknowledging)."""
    layer = get_channel_layer()
    worker = CommandWorker()
    worker.channel_layer = layer
    try:
        while not stop.is_set():
            receive = asyncio.ensure_future(layer.receive(COMMANDS_CHANNEL))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({receive, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not receive.done():
                receive.cancel()
                await asyncio.gather(receive, return_exceptions=True)
                break
            stopped.cancel()
            message: dict[str, Any] = receive.result()
            if message.get("type") == "chat.command":
                await worker.chat_command(message)  # acknowledged by the next receive
    finally:
        await layer.close()


class Command(BaseCommand):
    help = "Answer the chat's /roll and /who commands from the durable chat-commands channel."

    def handle(self, *args: Any, **options: Any) -> None:
        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await serve(stop)

        asyncio.run(main())
