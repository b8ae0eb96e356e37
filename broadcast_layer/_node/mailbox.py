"""The in-memory queue of one local process-specific channel.

Lighter than ``asyncio.Queue`` (no putters, no maxsize bookkeeping): group fan-out puts
into thousands of mailboxes per message, so each put is a deque append and at most one
future wake-up.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

#: A queued message: (expiry deadline on the monotonic clock, message, counted, copy).
#: ``counted`` says whether Redis counts it as in flight; ``copy``, when not None, makes
#: the receiver's own copy: a group message is one letter shared by every member's
#: mailbox and copied only when a member receives it, so a backlog holds no per-member
#: objects for the garbage collector to walk.
Letter = tuple[float, dict[str, Any], bool, Callable[[], dict[str, Any]] | None]


class Mailbox:
    """A bounded FIFO of letters; a full mailbox refuses rather than blocks.

    ``receivers`` (how many ``receive()`` calls are in progress) and ``idle_since``
    (monotonic time the last of them ended, or the mailbox was made) are kept by the
    node's receive path, so its upkeep can find abandoned channels without a timer.
    """

    __slots__ = ("_capacity", "_letters", "_waiters", "dropped", "idle_since", "receivers")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._letters: deque[Letter] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.dropped = 0
        self.receivers = 0
        self.idle_since = time.monotonic()  # never received on counts as idle since made

    def put(self, letter: Letter) -> bool:
        """Queue a letter; False (and counted in ``dropped``) when full."""
        if len(self._letters) >= self._capacity:
            self.dropped += 1
            return False
        self._letters.append(letter)
        self._wake_one()
        return True

    def put_urgent(self, letter: Letter) -> None:
        """Queue a letter even when full (control messages such as a disconnect)."""
        self._letters.append(letter)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def get(self) -> Letter:
        """Wait for the next letter (expired ones included: the caller decides)."""
        while not self._letters:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif self._letters:  # we were woken for a letter we will not take
                    self._wake_one()
                raise
        return self._letters.popleft()

    def drain(self) -> list[Letter]:
        """Remove and return every queued letter."""
        letters = list(self._letters)
        self._letters.clear()
        return letters

    def __len__(self) -> int:
        return len(self._letters)
