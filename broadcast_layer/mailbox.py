"""The in-memory queue of one local process-specific channel."""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple


class Letter(NamedTuple):
    """A queued message: when it expires, and whether Redis counts it as in flight."""

    deadline: float
    message: dict[str, Any]
    counted: bool


class Mailbox:
    """A bounded FIFO of :class:`Letter`; a full mailbox refuses rather than blocks."""

    __slots__ = ("_queue", "dropped")

    def __init__(self, capacity: int) -> None:
        self._queue: asyncio.Queue[Letter] = asyncio.Queue(maxsize=capacity)
        self.dropped = 0

    def put(self, letter: Letter) -> bool:
        """Queue a letter; False (and counted in ``dropped``) when full."""
        try:
            self._queue.put_nowait(letter)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    def full(self) -> bool:
        """True when another letter would be refused."""
        return self._queue.full()

    async def get(self) -> Letter:
        """Wait for the next letter (expired ones included: the caller decides)."""
        return await self._queue.get()

    def drain(self) -> list[Letter]:
        """Remove and return every queued letter."""
        letters = []
        while not self._queue.empty():
            letters.append(self._queue.get_nowait())
        return letters

    def __len__(self) -> int:
        return self._queue.qsize()


def expired(letter: Letter) -> bool:
    """True when the letter waited longer than the layer's ``expiry``."""
    return letter.deadline <= time.monotonic()
