"""The in-memory queue of one local process-specific channel.

Lighter than ``asyncio.Queue`` (no putters, no maxsize bookkeeping): group fan-out puts
into thousands of mailboxes per message, so each put is a deque append and at most one
future wake-up. Group fan-out may also wait for room in a full mailbox (back-pressure,
see ``backpressure.py``); the mailbox keeps the state of that wait.
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

#: What :meth:`Mailbox.offer` returns: queued (True, or False when now over half full),
#: or not queued (None). Truth-tested first: the common case costs one test per member.
ROOMY, FILLING, FULL = True, False, None


class Mailbox:
    """A bounded FIFO of letters; a full mailbox refuses rather than blocks.

    ``receivers`` (how many ``receive()`` calls are in progress) and ``idle_since``
    (monotonic time the last of them ended, or the mailbox was made) are kept by the
    node's receive path, so its upkeep can find abandoned channels without a timer.

    ``full_since`` (monotonic time group fan-out first found it full, 0.0 when not) and
    ``stalled`` belong to back-pressure: both are cleared once the receiver has taken
    letters down to half the capacity.
    """

    __slots__ = ("_capacity", "_half", "_letters", "_room", "_waiters", "dropped",
                 "full_since", "idle_since", "receivers", "stalled")  # fmt: skip

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._half = capacity // 2
        self._letters: deque[Letter] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._room: list[asyncio.Future[None]] = []  # fan-outs waiting for a free slot
        self.dropped = 0
        self.receivers = 0
        self.idle_since = time.monotonic()  # never received on counts as idle since made
        self.full_since = 0.0
        self.stalled = False

    def put(self, letter: Letter) -> bool:
        """Queue a letter; False (and counted in ``dropped``) when full."""
        if len(self._letters) >= self._capacity:
            self.dropped += 1
            return False
        self._letters.append(letter)
        if self._waiters:
            self._wake_one()
        return True

    def offer(self, letter: Letter) -> bool | None:
        """Queue a group letter if there is room (the fan-out's put).

        Returns ``ROOMY`` (True), or ``FILLING`` (False) when the letter was queued but
        the mailbox is now over half full, or ``FULL`` (None) when nothing was queued
        (not counted as dropped: the caller decides whether to wait for room or drop).
        """
        letters = self._letters
        size = len(letters)
        if size >= self._capacity:
            return FULL
        letters.append(letter)
        if self._waiters:
            self._wake_one()
        return size < self._half

    def put_urgent(self, letter: Letter) -> None:
        """Queue a letter even when full (control messages such as a disconnect)."""
        self._letters.append(letter)
        if self._waiters:
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
        letter = self._letters.popleft()
        if self.full_since:  # fan-out found this mailbox full: it may be waiting for room
            self._made_room()
        return letter

    def _made_room(self) -> None:
        room, self._room = self._room, []
        for waiter in room:
            if not waiter.done():
                waiter.set_result(None)
        if len(self._letters) <= self._half:  # caught up: an ordinary member again
            self.full_since = 0.0
            self.stalled = False

    async def room(self) -> None:
        """Wait until a receiver takes a letter (the caller bounds the wait)."""
        waiter = asyncio.get_running_loop().create_future()
        self._room.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._room:
                self._room.remove(waiter)

    def drain(self) -> list[Letter]:
        """Remove and return every queued letter (a fan-out waiting for room is woken)."""
        letters = list(self._letters)
        self._letters.clear()
        self._made_room()
        return letters

    @property
    def full(self) -> bool:
        """True when a put would be refused."""
        return len(self._letters) >= self._capacity

    def __len__(self) -> int:
        return len(self._letters)
