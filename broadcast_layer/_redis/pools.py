"""Command-connection pools that wait for a free connection instead of failing at once.

Every command connection of the layer (one pool per host per event loop), of the sync
registry and of the emitter (one pool per host per process) comes from a pool made
waiting by :func:`make_waiting`. Such a pool holds at most ``max_connections``
connections; a caller that finds them all in use waits, first come first served, for
one to be released, and only after ``pool_timeout`` seconds gets
:class:`~broadcast_layer.exceptions.PoolExhausted`. It works on any redis-py pool
(plain, Sentinel, asyncio or blocking), so it composes with the connection guard and
the Sentinel master pool.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from dataclasses import dataclass
from typing import Any

from redis import asyncio as aioredis

from ..exceptions import PoolExhausted

__all__ = ["PoolLimits", "make_waiting"]


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """How many command connections one pool may open, and how long a caller waits for one."""

    max_connections: int = 100
    timeout: float = 5.0


def _exhausted(pool: Any) -> PoolExhausted:
    return PoolExhausted(
        f"All {pool.max_connections} Redis connections of this pool stayed in use for "
        f"{pool.waiting_timeout}s (CONFIG max_connections / pool_timeout)"
    )


class _AsyncWait:
    """Mixin for asyncio pools: a semaphore of ``max_connections`` slots in front of them.

    Not redis-py's asyncio BlockingConnectionPool: that one enters an async generator
    per checkout, which a loop being closed by ``asyncio.run`` refuses with a warning.
    """

    max_connections: int
    waiting_timeout: float
    _waiting_slots: asyncio.Semaphore | None
    _waiting_held: set[Any]

    def _init_waiting(self, timeout: float) -> None:
        self.waiting_timeout = timeout
        self._waiting_slots = None  # made on first use, on the pool's event loop
        self._waiting_held = set()  # connections handed out through a slot

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        slots = self._waiting_slots
        if slots is None:
            slots = self._waiting_slots = asyncio.Semaphore(self.max_connections)
        if slots.locked():  # every slot taken: queue, bounded
            try:
                async with asyncio.timeout(self.waiting_timeout):
                    await slots.acquire()
            except TimeoutError:
                raise _exhausted(self) from None
        else:
            await slots.acquire()  # returns at once, no timer needed
        try:
            connection = await super().get_connection(*args, **kwargs)  # type: ignore[misc]
        except BaseException:
            slots.release()  # a connection it took is already back in the pool
            raise
        self._waiting_held.add(connection)
        return connection

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)  # type: ignore[misc]
        finally:
            if connection in self._waiting_held and self._waiting_slots is not None:
                self._waiting_held.discard(connection)
                self._waiting_slots.release()


class _SyncWait:
    """Mixin for blocking (thread-safe) pools: the same wait, with a threading semaphore."""

    max_connections: int
    waiting_timeout: float
    _waiting_slots: threading.Semaphore
    _waiting_held: set[Any]
    _waiting_lock: threading.Lock

    def _init_waiting(self, timeout: float) -> None:
        self.waiting_timeout = timeout
        self._waiting_slots = threading.Semaphore(self.max_connections)
        self._waiting_held = set()
        self._waiting_lock = threading.Lock()

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if not self._waiting_slots.acquire(timeout=self.waiting_timeout):
            raise _exhausted(self)
        try:
            connection = super().get_connection(*args, **kwargs)  # type: ignore[misc]
        except BaseException:
            self._waiting_slots.release()
            raise
        with self._waiting_lock:
            self._waiting_held.add(connection)
        return connection

    def release(self, connection: Any) -> None:
        try:
            super().release(connection)  # type: ignore[misc]
        finally:
            with self._waiting_lock:
                held = connection in self._waiting_held
                self._waiting_held.discard(connection)
            if held:
                self._waiting_slots.release()


@functools.cache
def _waiting(cls: type, mixin: type) -> type:
    return type(f"Waiting{cls.__name__}", (mixin, cls), {})


def _sized_by_host(host: dict[str, Any]) -> bool:
    """Whether the ``hosts`` entry sets its own pool size (dict key or URL query)."""
    address = host.get("address")
    return "max_connections" in host or (
        isinstance(address, str) and "max_connections=" in address.partition("?")[2]
    )


def make_waiting(pool: Any, host: dict[str, Any], limits: PoolLimits) -> Any:
    """Make ``pool`` (built for ``host``) wait for a free connection; return it.

    The size is ``limits.max_connections`` unless the host entry sets its own
    ``max_connections``, which wins, as channels_redis reads it. Call before any use.
    """
    mixin = _AsyncWait if isinstance(pool, aioredis.ConnectionPool) else _SyncWait
    if not isinstance(pool, mixin):
        cls: Any = type(pool)
        pool.__class__ = _waiting(cls, mixin)
    if not _sized_by_host(host):
        pool.max_connections = limits.max_connections
    pool._init_waiting(limits.timeout)
    return pool
