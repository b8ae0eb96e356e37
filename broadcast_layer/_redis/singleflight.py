"""Single-flight: identical concurrent reads on one event loop share one Redis round trip.

A read never gets an answer from a round trip that started before the read was made:
while one flight for a key is in progress, later callers gather into the *next* flight,
which starts when the current one ends. So a burst of N identical reads costs at most
two round trips, and a caller that wrote something and then reads still sees its write.
Nothing is cached once a flight has answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class _LeaderCancelled(Exception):
    """The caller running a flight was cancelled: its followers start over."""


def _settle(future: asyncio.Future[Any], exc: BaseException) -> None:
    future.set_exception(exc)
    future.exception()  # marks it retrieved: a flight nobody joined logs nothing


class SingleFlight:
    """Coalesces concurrent calls with the same key into one execution per event loop.

    Results and exceptions are shared by every caller of a flight. A caller's own
    cancellation affects only that caller; if the caller running the flight is
    cancelled, the others start a new flight instead of seeing the cancellation.
    """

    def __init__(self) -> None:
        key = tuple[asyncio.AbstractEventLoop, Hashable]
        self._running: dict[key, asyncio.Future[Any]] = {}
        self._next: dict[key, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        """Return ``await fn()``, or the result of an identical flight that started later."""
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        while True:
            waiting = self._next.get(slot)
            if waiting is not None:  # a flight that has not started yet: ride along
                try:
                    return await asyncio.shield(waiting)
                except _LeaderCancelled:
                    continue
            running = self._running.get(slot)
            future: asyncio.Future[Any] = loop.create_future()
            if running is None:
                return await self._lead(slot, fn, future)
            # A flight is already on the wire and may predate this call: lead the next one.
            self._next[slot] = future
            try:
                await asyncio.wait([running])  # its outcome is not ours; never cancels it
            except BaseException:
                del self._next[slot]
                _settle(future, _LeaderCancelled())
                raise
            del self._next[slot]
            return await self._lead(slot, fn, future)

    async def _lead(
        self,
        slot: tuple[asyncio.AbstractEventLoop, Hashable],
        fn: Callable[[], Awaitable[T]],
        future: asyncio.Future[Any],
    ) -> T:
        self._running[slot] = future
        try:
            result = await fn()
        except Exception as exc:
            _settle(future, exc)
            raise
        except BaseException:  # cancelled (or the process is exiting): nothing to share
            _settle(future, _LeaderCancelled())
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._running[slot]
