"""The one retry policy of the package: which failed calls may be tried again, and when.

Every retry in the package goes through here: :func:`call` / :func:`call_sync` for one
call that may be tried again, :class:`Retrying` for the loops that wait out an outage
(the pub/sub reader, a ``receive()`` blocked in BLPOP). Backoff has full jitter, so many
processes that lost Redis together do not come back in lockstep.

The rule (docs/reliability.md): a call is tried again after a connection error only
when that cannot apply a write twice, that is when the error is known to precede
sending (:class:`NotSent`) or the call is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    SlotNotCoveredError,
    TryAgainError,
)

from .. import _metrics
from .errors import CONNECTION_ERRORS, NotSent, pool_exhausted

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Tries per call, the first included: a dead idle connection costs none of them (the
#: connection guard reconnects before sending), so these are for real failures.
ATTEMPTS = 3


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` waits U(0, min(cap, base * 2**n))."""

    base: float = 0.05
    cap: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        return random.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 32)))


DEFAULT_BACKOFF = Backoff()


class Retrying:
    """The backoff state of a loop that retries until it succeeds (a reader, a receiver)."""

    __slots__ = ("attempt", "backoff")

    def __init__(self, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        self.backoff = backoff
        self.attempt = 0

    def next_delay(self) -> float:
        """The next wait; each call makes the following one longer, up to the cap."""
        delay = self.backoff.delay(self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the shortest wait (after a success)."""
        self.attempt = 0


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that redis-py turned into an error or swallowed.

    Some redis-py versions convert a CancelledError that lands mid-command into a
    ConnectionError (or drop it); a retry loop must not outlive its cancellation.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


#: Replies of a server that refused a command without running it: LOADING, and a
#: cluster between owners (CLUSTERDOWN, TRYAGAIN, MASTERDOWN, a slot not covered yet).
_REFUSED = (BusyLoadingError, ClusterDownError, MasterDownError, SlotNotCoveredError,
            TryAgainError)  # fmt: skip


def retryable(exc: BaseException, idempotent: bool) -> bool:
    """Whether a call that raised ``exc`` may be tried again without applying a write twice."""
    if pool_exhausted(exc) or isinstance(exc, (AuthenticationError, AuthorizationError)):
        return False  # not an outage: trying again only delays the real error
    if isinstance(exc, (NotSent, *_REFUSED)):
        return True  # never written, or refused unexecuted (LOADING, a cluster mid-failover)
    return idempotent and isinstance(exc, CONNECTION_ERRORS)


def _give_up(exc: BaseException, attempt: int, what: str) -> None:
    if attempt:
        exc.add_note(f"{what}: gave up after {attempt + 1} attempts")


async def call(
    fn: Callable[[], Awaitable[T]],
    *,
    idempotent: bool,
    what: str,
    attempts: int = ATTEMPTS,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> T:
    """Await ``fn()``, calling it again (at most ``attempts`` calls) while :func:`retryable`.

    Raises the last error (redis-py's; ``errors.redis_errors`` translates it at the boundary).
    """
    attempt = 0
    while True:
        try:
            return await fn()
        except Exception as exc:
            raise_if_cancelled()
            delay = _before_retry(exc, attempt, attempts, idempotent, what, backoff)
            attempt += 1
            await asyncio.sleep(delay)  # backoff between attempts, not a poll


def call_sync(
    fn: Callable[[], T],
    *,
    idempotent: bool,
    what: str,
    attempts: int = ATTEMPTS,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> T:
    """The blocking twin of :func:`call` (for the emitter and the sync registry)."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            delay = _before_retry(exc, attempt, attempts, idempotent, what, backoff)
            attempt += 1
            time.sleep(delay)  # backoff between attempts, not a poll


def _before_retry(
    exc: Exception, attempt: int, attempts: int, idempotent: bool, what: str, backoff: Backoff
) -> float:
    """The wait before retry number ``attempt + 1``; re-raises ``exc`` when none is allowed."""
    if attempt + 1 >= attempts or not retryable(exc, idempotent):
        _give_up(exc, attempt, what)
        raise exc
    delay = backoff.delay(attempt)
    _metrics.recorder.retried(what)
    logger.info("%s failed (%s); retry %d of %d in %.3fs",
                what, exc, attempt + 1, attempts - 1, delay)  # fmt: skip
    return delay
