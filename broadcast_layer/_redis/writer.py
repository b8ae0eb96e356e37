"""The pipelined writers of one host: the ordered script writer and the auto-pipelined publisher.

Both queue what callers hand them while a round trip is in flight and send the queue as
one pipeline, in order; each caller's future is settled with its own reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from .. import _metrics
from .._protocol.scripts import Call
from ..exceptions import RedisUnavailable
from . import retry
from .loop import LoopBound
from .retry import raise_if_cancelled

T = TypeVar("T")

logger = logging.getLogger(__name__)

RunAll = Callable[[list[Call[Any]]], Awaitable[list[Any]]]
#: A publish waiting for the next pipeline: channel, data, the caller's future.
_Queued = tuple[str, bytes, "asyncio.Future[int]"]
#: Fewest submissions a pipeline gets when pending writes are split over several.
MIN_PIPELINE = 16
#: A submission waiting for (or in) a pipeline: its calls, the caller's future, when,
#: and the scopes its calls write to (None: one has none).
_Write = tuple[tuple[Call[Any], ...], "asyncio.Future[Any]", float, "frozenset[Hashable] | None"]


def settle(futures: Sequence[asyncio.Future[Any]], results: Sequence[Any]) -> None:
    """Give each pending future its result; an ``Exception`` result is raised to its waiter."""
    for future, result in zip(futures, results, strict=True):
        if future.done():
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class OrderedWriter(LoopBound):
    """Script writes that reach Redis in the order they were submitted, where order matters.

    A writer task sends what was submitted meanwhile as one pipeline (``run_all``).
    ``scope(call)`` names what a write is confined to (a channel: its record and its
    memberships), and writes of different scopes commute, so up to ``depth`` pipelines
    with disjoint scopes are in flight at once, each on its own connection. A pipeline
    with a write of a scope in flight, or with a write that has no scope (``None``: a
    heartbeat, a re-assert step), waits for those in flight; so Redis sees this node's
    writes for any one channel, and every unscoped write, in the order the node made
    them. With a ``timeout``, a write Redis has not confirmed that long after it was
    submitted fails with :class:`RedisUnavailable` (it is still sent, in its turn): one
    timer for the writer bounds every wait, instead of one per caller.
    """

    def __init__(
        self,
        run_all: RunAll,
        timeout: float | None = None,
        scope: Callable[[Call[Any]], Hashable | None] = lambda call: None,
        depth: int = 1,
    ) -> None:
        self._run_all = run_all
        self.timeout = timeout
        self._scope = scope
        self._depth = depth
        self._pending: list[_Write] = []
        self._flights: dict[asyncio.Task[None], tuple[list[_Write], set[Hashable] | None]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.failed_writes = 0  # submitted writes that failed: the registry may lack them
        self._closed = False
        self._loop = None  # its node's, found at the first write (LoopBound)

    def submit(self, call: Call[T]) -> asyncio.Future[T]:
        """Queue a write; the future resolves once Redis has run it (in submission order)."""
        return self.submit_all((call,))

    def submit_all(self, calls: Sequence[Call[Any]]) -> asyncio.Future[Any]:
        """Queue writes, in order; one future for all: the first call's result once every
        call has run, or the first failure."""
        if not calls:
            raise ValueError("submit_all() needs at least one call")
        loop = self._running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:  # no loop will run it: settle it now, as close() does the queued
            future.cancel()
            return future
        if len(calls) == 1:  # the common case (a join or a leave on one server)
            key = self._scope(calls[0])
            scopes = None if key is None else frozenset((key,))
        else:
            keys = [self._scope(call) for call in calls]
            scopes = None if None in keys else frozenset(keys)
        self._pending.append((tuple(calls), future, loop.time(), scopes))
        if self._task is None or self._task.done():  # asyncio.run() may have cancelled it
            self._task = loop.create_task(
                self._write_loop(), name="broadcast_layer.registry-writer"
            )
        if self.timeout is not None and self._timer is None:
            self._timer = loop.call_at(loop.time() + self.timeout, self._expire)
        self._wakeup.set()
        return future

    def submit_quietly(self, call: Call[Any]) -> None:
        """Queue a write nobody waits for; a failure is logged, not raised."""
        self.submit(call).add_done_callback(_log_failure)

    def _expire(self) -> None:
        """Fail the writes older than the timeout; wake again for the next oldest."""
        self._timer = None
        if self.timeout is None or self._closed:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() - self.timeout
        flying = [write for writes, _ in self._flights.values() for write in writes]
        oldest: float | None = None
        for _, future, submitted, _ in (*flying, *self._pending):
            if future.done():
                continue
            if submitted > deadline:
                oldest = submitted if oldest is None else min(oldest, submitted)
                continue
            future.set_exception(RedisUnavailable("The registry write was not confirmed in time"))
        if oldest is not None:
            self._timer = loop.call_at(oldest + self.timeout, self._expire)

    def _scopes(self, batch: list[_Write]) -> set[Hashable] | None:
        """The scopes a batch writes to; None if one of its writes has none (a barrier)."""
        scopes: set[Hashable] = set()
        for _, _, _, keys in batch:
            if keys is None:
                return None
            scopes |= keys
        return scopes

    def _must_wait(self, scopes: set[Hashable] | None) -> bool:
        if not self._flights:
            return False
        if scopes is None or len(self._flights) >= self._depth:
            return True
        return any(flying is None or not scopes.isdisjoint(flying)
                   for _, flying in self._flights.values())  # fmt: skip

    async def _write_loop(self) -> None:
        while not self._closed:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                continue
            scopes = self._scopes(self._pending)
            if self._must_wait(scopes):
                continue  # woken again when a pipeline in flight finishes
            batch, self._pending = self._pending, []
            for part, part_scopes in self._split(batch, scopes):
                flight = self._running_loop().create_task(
                    self._fly(part), name="broadcast_layer.registry-pipeline"
                )
                self._flights[flight] = (part, part_scopes)

    def _split(
        self, batch: list[_Write], scopes: set[Hashable] | None
    ) -> list[tuple[list[_Write], set[Hashable] | None]]:
        """Up to the free depth of pipelines with disjoint scopes, of at least
        MIN_PIPELINE submissions each: Redis runs one while the node prepares the next
        and reads the one before, instead of both waiting for one large pipeline."""
        count = min(self._depth - len(self._flights), len(batch) // MIN_PIPELINE)
        if scopes is None or count < 2:
            return [(batch, scopes)]
        parts: list[list[_Write]] = [[] for _ in range(count)]
        part_scopes: list[set[Hashable]] = [set() for _ in range(count)]
        home: dict[Hashable, int] = {}  # scope -> its part, so it keeps its order
        for write in batch:
            mine = write[3] or frozenset()
            placed = {home[key] for key in mine if key in home}
            if len(placed) > 1:  # spans two parts already: do not split at all
                return [(batch, scopes)]
            index = placed.pop() if placed else min(range(count), key=lambda i: len(parts[i]))
            parts[index].append(write)
            for key in mine:
                home[key] = index
                part_scopes[index].add(key)
        return [(part, keys) for part, keys in zip(parts, part_scopes, strict=True) if part]

    async def _fly(self, batch: list[_Write]) -> None:
        calls = [call for submitted, _, _, _ in batch for call in submitted]
        try:
            results = await self._run_all(calls)
        except Exception as exc:  # the writer must outlive any one failed batch
            raise_if_cancelled()
            results = [exc] * len(calls)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._flights.pop(task, None)
            self._wakeup.set()  # writes held back for this one may go now
        failed = sum(isinstance(result, Exception) for result in results)
        if failed:
            self.failed_writes += failed
            _metrics.recorder.registry_write_failed(failed)
        position = 0
        for submitted, future, _, _ in batch:  # each submission: its first result or failure
            count = len(submitted)
            if count == 1:  # the common case: no slice, no search
                result = results[position]
                error = result if isinstance(result, Exception) else None
            else:
                mine = results[position : position + count]
                result = mine[0]
                error = next((r for r in mine if isinstance(r, Exception)), None)
            position += count
            if not future.done():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)

    async def close(self) -> None:
        """Stop the writer and its pipelines, cancel the writes still queued (idempotent)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._task = self._task, None
        await _stop(task)
        flights, self._flights = list(self._flights.items()), {}
        for flight, _ in flights:
            await _stop(flight)
        for _, (writes, _) in flights:
            for _, future, _, _ in writes:
                future.cancel()
        for _, future, _, _ in self._pending:
            future.cancel()
        self._pending.clear()


class Publisher:
    """PUBLISH (or SPUBLISH), auto-pipelined.

    A call goes out at once when no publish is in flight; calls made meanwhile are
    queued and sent together, in order, in one pipeline when it returns. A lone
    sequential caller pays nothing extra; concurrent callers share round trips instead
    of each paying redis-py's per-command cost.
    """

    def __init__(
        self, client: Any, command: str = "PUBLISH", route: Callable[[str], Any] | None = None
    ) -> None:
        """``command``: PUBLISH, or SPUBLISH on a cluster (``scripts.publish_command``).

        ``route`` (a cluster's): channel -> the server it goes to. A batch then becomes
        one pipeline per server, each sent (and retried) on its own, so a connection
        lost to one master never makes the others' publishes go out twice.
        """
        self._client = client
        self._command = command
        self._route = route
        self._publishing = False
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, channel: str, data: bytes) -> int:
        """PUBLISH and return how many subscribers got it (never retried once sent)."""
        if self._publishing:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._queue.append((channel, data, future))
            return await future
        self._publishing = True
        try:
            send = functools.partial(self._client.execute_command, self._command, channel, data)
            return int(await retry.call(send, idempotent=False, what=self._command))
        finally:
            if self._queue and not self._closed:
                self._flusher = asyncio.get_running_loop().create_task(
                    self._flush(), name="broadcast_layer.publisher"
                )
            else:
                self._publishing = False

    async def _flush(self) -> None:
        try:
            while self._queue and not self._closed:
                batch, self._queue = self._queue, []
                if self._route is None:
                    await self._send_batch(batch)
                    continue
                by_server: dict[Any, list[_Queued]] = {}
                for queued in batch:
                    by_server.setdefault(self._route(queued[0]), []).append(queued)
                await asyncio.gather(*(self._send_batch(part) for part in by_server.values()))
        finally:
            self._publishing = False

    async def _send_batch(self, batch: list[_Queued]) -> None:
        """Publish a batch in one pipeline and settle each caller's future."""
        try:
            send = functools.partial(self._publish_batch, batch)
            replies = await retry.call(send, idempotent=False, what=f"{self._command} pipeline")
        except Exception as exc:
            raise_if_cancelled()
            replies = [exc] * len(batch)
        counts = [reply if isinstance(reply, Exception) else int(reply)
                  for reply in replies]  # fmt: skip
        settle([future for _, _, future in batch], counts)

    async def _publish_batch(self, batch: list[_Queued]) -> Any:
        async with self._client.pipeline(transaction=False) as pipe:
            for channel, data, _ in batch:
                pipe.execute_command(self._command, channel, data)
            return await pipe.execute(raise_on_error=False)

    async def close(self) -> None:
        """Stop the flusher and cancel the publishes still queued (idempotent)."""
        self._closed = True
        flusher, self._flusher = self._flusher, None
        await _stop(flusher)
        for _, _, queued in self._queue:
            queued.cancel()
        self._queue.clear()


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("Registry write failed: %s", future.exception())
