"""The pipelined writers of one host: the ordered script writer and the auto-pipelined publisher.

Both queue what callers hand them while a round trip is in flight and send the queue as
one pipeline when it returns, in order; each caller's future is settled with its own
reply (:func:`settle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .. import _metrics
from .._protocol.scripts import Call
from . import retry
from .retry import raise_if_cancelled

T = TypeVar("T")

logger = logging.getLogger(__name__)

RunAll = Callable[[list[Call[Any]]], Awaitable[list[Any]]]
#: A publish waiting for the next pipeline: channel, data, the caller's future.
_Queued = tuple[str, bytes, "asyncio.Future[int]"]


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


class OrderedWriter:
    """Script writes that reach Redis in the order they were submitted.

    One writer task, one pipeline at a time: writes submitted meanwhile are batched into
    the next round trip, so the registry sees concurrent joins and leaves in the order
    the node applied them.
    """

    def __init__(self, run_all: RunAll) -> None:
        self._run_all = run_all
        self._pending: list[tuple[Call[Any], asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failed_writes = 0  # submitted writes that failed: the registry may lack them
        self._closed = False

    def submit(self, call: Call[T]) -> asyncio.Future[T]:
        """Queue a write; the future resolves once Redis has run it (in submission order)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        if self._task is None or self._task.done():  # asyncio.run() may have cancelled it
            self._task = asyncio.get_running_loop().create_task(
                self._write_loop(), name="broadcast_layer.registry-writer"
            )
        self._wakeup.set()
        return future

    def submit_quietly(self, call: Call[Any]) -> None:
        """Queue a write nobody waits for; a failure is logged, not raised."""
        self.submit(call).add_done_callback(_log_failure)

    async def _write_loop(self) -> None:
        while not self._closed:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                results = await self._run_all([call for call, _ in batch])
            except Exception as exc:  # the writer must outlive any one failed batch
                raise_if_cancelled()
                results = [exc] * len(batch)
            failed = sum(isinstance(result, Exception) for result in results)
            if failed:
                self.failed_writes += failed
                _metrics.recorder.registry_write_failed(failed)
            settle([future for _, future in batch], results)

    async def close(self) -> None:
        """Stop the writer task and cancel the writes still queued (idempotent)."""
        self._closed = True
        task, self._task = self._task, None
        await _stop(task)
        for _, future in self._pending:
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
