"""The event loop an object works on, found at its first use and then remembered.

``asyncio.get_running_loop()`` makes a ``getpid()`` system call on every call on Python
3.11 (about 0.2 us here, more under load), and the hottest paths (a consumer waiting for
a message, a registry write) would make one per call. An object that belongs to one
node, hence one loop, asks once. Used from another loop, its futures fail loudly
("attached to a different loop") as asyncio's own primitives do.
"""

from __future__ import annotations

import asyncio


class LoopBound:
    """Mixin: :meth:`_running_loop` is the loop of the first call, asked once."""

    __slots__ = ("_loop",)

    _loop: asyncio.AbstractEventLoop | None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop
