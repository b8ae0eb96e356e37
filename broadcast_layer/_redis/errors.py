"""redis-py's connection errors: what each one means, and the one boundary that translates them.

Inside the package a lost connection is redis-py's ``ConnectionError``/``TimeoutError``
(or :class:`NotSent`, when the command was never written). The public entry points
(the layer, the registries, the emitter) wrap their I/O in :data:`redis_errors` or
:func:`sync_redis_errors`, which turn those into
:class:`~broadcast_layer.exceptions.RedisUnavailable` (or ``PoolExhausted``); nothing
else catches them to translate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    MasterDownError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import PoolExhausted, RedisUnavailable

try:
    from redis.exceptions import MaxConnectionsError
except ImportError:  # pragma: no cover - redis-py before 5.1 raises a plain ConnectionError
    MaxConnectionsError = RedisConnectionError  # type: ignore[misc, assignment]

__all__ = [
    "CONNECTION_ERRORS",
    "OUTAGE",
    "NotSent",
    "not_sent",
    "pool_exhausted",
    "redis_errors",
    "sync_redis_errors",
    "unavailable",
]

#: redis-py errors that mean "the connection is gone": reconnect, don't crash.
CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

_POOL_MESSAGES = ("Too many connections", "No connection available")
_NOT_RETRYABLE = (AuthenticationError, AuthorizationError)


class NotSent(RedisConnectionError):
    """The command was never written to Redis: retrying it cannot apply it twice.

    Raised by the guarded connections (``clients.py``) when connecting, or the
    health check before a command, fails.
    """


@contextlib.contextmanager
def not_sent(what: str) -> Iterator[None]:
    """Connection errors inside become :class:`NotSent`: the command was never written."""
    try:
        yield
    except (*_NOT_RETRYABLE, NotSent):
        raise
    except CONNECTION_ERRORS as exc:
        raise NotSent(f"{what}: {exc}") from exc


def pool_exhausted(exc: BaseException) -> bool:
    """True when ``exc`` is redis-py's "the pool has no connection to give", or ours."""
    if isinstance(exc, PoolExhausted):  # the wait for a connection already ran out
        return True
    if isinstance(exc, MaxConnectionsError) and MaxConnectionsError is not RedisConnectionError:
        return True
    return isinstance(exc, RedisConnectionError) and str(exc).startswith(_POOL_MESSAGES)


def unavailable(exc: BaseException) -> RedisUnavailable:
    """The public exception for a redis-py connection error (chain ``exc`` as its cause)."""
    if pool_exhausted(exc):
        return PoolExhausted(
            f"Redis connection pool exhausted ({exc}): raise CONFIG max_connections or pool_timeout"
        )
    return RedisUnavailable(f"Redis is unreachable: {exc}")


#: Errors a public entry point reports as RedisUnavailable: a lost connection, and a
#: cluster that cannot serve the slot right now (mid-failover, or no node answers).
_OUTAGE = (RedisConnectionError, RedisTimeoutError, ClusterDownError, MasterDownError,
           TryAgainError, SlotNotCoveredError, RedisClusterException)  # fmt: skip
#: The same, for a hot entry point that writes ``try: ... except OUTAGE as exc: raise
#: unavailable(exc) from exc`` instead of ``async with redis_errors`` (which costs two
#: coroutines per call, a twentieth of a leave's CPU in the node).
OUTAGE = _OUTAGE


class _RedisErrors:
    """``async with redis_errors:``: connection errors inside become :class:`RedisUnavailable`.

    A plain class, not ``@asynccontextmanager``: it wraps every ``receive``, and an
    async generator per call costs more than the receive itself.
    """

    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:  # fmt: skip
        if isinstance(exc, _OUTAGE):
            raise unavailable(exc) from exc


#: The async error boundary of every public entry point.
redis_errors = _RedisErrors()


@contextlib.contextmanager
def sync_redis_errors() -> Iterator[None]:
    """The synchronous twin of :data:`redis_errors`."""
    try:
        yield
    except _OUTAGE as exc:
        raise unavailable(exc) from exc
