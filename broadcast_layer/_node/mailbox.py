"""The in-memory queue of one local process-specific channel.

Lighter than ``asyncio.Queue`` (no putters, no maxsize bookkeeping): group fan-out puts
into thousands of mailboxes per message, so each put is a deque append and at most one
future wake-up. Group fan-out may also wait for room in a full mailbox (back-pressure,
see ``backpressure.py``); the mailbox keeps the state of that wait. A mailbox near its
capacity tells the node's credit keeping (``credit.py``) about every change, so senders
on other nodes learn how much room is left.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .._redis.loop import LoopBound

#: A queued message: (expiry deadline on the monotonic clock, message, copy). ``copy``,
#: when not None, makes the receiver's own copy: a group message is one letter shared by
#: every member's mailbox and copied only when a member receives it, so a backlog holds
#: no per-member objects for the garbage collector to walk.
Letter = tuple[float, dict[str, Any], Callable[[], dict[str, Any]] | None]

#: Told of a mailbox's change (see :class:`Mailbox`).
Watch = Callable[["Mailbox"], None]

#: What :meth:`Mailbox.offer` returns: queued (True, or False when now over half full),
#: or not queued (None). Truth-tested first: the common case costs one test per member.
ROOMY, FILLING, FULL = True, False, None


def _unwatched(mailbox: Mailbox) -> None:
    """The watch of a mailbox nobody keeps credit for."""


class Pressure:
    """A mailbox's back-pressure episode: since when group fan-out has found it full,
    whether it is stalled, and the fan-outs waiting for room in it."""

    __slots__ = ("full_since", "room", "stalled")

    def __init__(self, full_since: float) -> None:
        self.full_since = full_since
        self.stalled = False
        self.room: list[asyncio.Future[None]] = []


class Mailbox(LoopBound):
    """A bounded FIFO of letters; a full mailbox refuses rather than blocks.

    ``capacity`` bounds local sends and group messages. A send from another node was
    admitted by the sender's check of the channel's credit in Redis; one admitted before
    the node's count reached Redis may find the mailbox full, so :meth:`put_remote` keeps
    it up to ``limit`` letters (the overshoot bound, see ``credit.py``).

    ``watch(mailbox)`` is called after a remote put that leaves ``high`` letters or more
    (group messages alone never start the counting), and after each put or take while
    ``watched`` (the node keeps credit for the channel).

    ``receivers`` (how many ``receive()`` calls are waiting on it) and ``idle_since``
    (monotonic time the last receive ended, or the mailbox was made) are kept by the
    node's receive path, so its upkeep can find abandoned channels without a timer.

    ``pressure`` is set by group fan-out when it finds the mailbox full (see
    ``backpressure.py``), and cleared once the receiver has taken the mailbox down to
    half its capacity. It is None the rest of the time, so an ordinary mailbox carries
    nothing for it.
    """

    __slots__ = ("_capacity", "_half", "_letters", "_waiters", "high", "idle_since", "limit",
                 "name", "pressure", "receivers", "watch", "watched")  # fmt: skip

    def __init__(
        self,
        capacity: int,
        *,
        name: str = "",
        limit: int | None = None,
        high: int = sys.maxsize,
        watch: Watch = _unwatched,
    ) -> None:
        self.name = name
        self._capacity = capacity
        self._half = capacity // 2
        self.limit = capacity if limit is None else limit
        self.high = high
        self.watch = watch
        self.watched = False
        self._letters: deque[Letter] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.receivers = 0
        self.idle_since = time.monotonic()  # never received on counts as idle since made
        self.pressure: Pressure | None = None
        self._loop = None  # its node's, found at the first wait (LoopBound)

    @property
    def capacity(self) -> int:
        """How many letters local sends and group messages may fill it with."""
        return self._capacity

    def put(self, letter: Letter) -> bool:
        """Queue a letter; False when full (the caller raises ``ChannelFull`` or counts a drop)."""
        return self._put(letter, self._capacity)

    def put_remote(self, letter: Letter) -> bool:
        """Queue a letter another node's send was admitted for; False past ``limit``."""
        if not self._put(letter, self.limit):
            return False
        if not self.watched and len(self._letters) >= self.high:
            self.watch(self)
        return True

    def put_urgent(self, letter: Letter) -> None:
        """Queue a letter even when full (control messages such as a disconnect)."""
        self._put(letter, sys.maxsize)

    def _put(self, letter: Letter, limit: int) -> bool:
        letters = self._letters
        if len(letters) >= limit:
            return False
        letters.append(letter)
        if self._waiters:
            self._wake_one()
        if self.watched:
            self.watch(self)
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
        if self.watched:
            self.watch(self)
        return size < self._half

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def take(self) -> Letter | None:
        """The next letter (expired ones included: the caller decides); None when empty."""
        letters = self._letters
        if not letters:
            return None
        letter = letters.popleft()
        if self.pressure is not None:  # fan-out found it full: it may be waiting for room
            self._made_room(self.pressure)
        if self.watched:
            self.watch(self)
        return letter

    async def wait(self) -> None:
        """Wait until a letter is queued (another reader may take it first)."""
        if self._letters:
            return
        waiter = self._running_loop().create_future()
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

    async def get(self) -> Letter:
        """Wait for the next letter and take it."""
        while (letter := self.take()) is None:
            await self.wait()
        return letter

    def _made_room(self, pressure: Pressure) -> None:
        room, pressure.room = pressure.room, []
        for waiter in room:
            if not waiter.done():
                waiter.set_result(None)
        if len(self._letters) <= self._half:  # caught up: an ordinary member again
            self.pressure = None

    async def room(self) -> None:
        """Wait until a receiver takes a letter (the caller bounds the wait)."""
        if self.pressure is None:
            self.pressure = Pressure(time.monotonic())
        room = self.pressure.room
        waiter = self._running_loop().create_future()
        room.append(waiter)
        try:
            await waiter
        finally:
            if waiter in room:
                room.remove(waiter)

    def drain(self) -> list[Letter]:
        """Remove and return every queued letter (a fan-out waiting for room is woken;
        the credit keeping is not told: the channel is being forgotten)."""
        letters = list(self._letters)
        self._letters.clear()
        if self.pressure is not None:
            self._made_room(self.pressure)
        return letters

    @property
    def full(self) -> bool:
        """True when a put would be refused."""
        return len(self._letters) >= self._capacity

    def __len__(self) -> int:
        return len(self._letters)
