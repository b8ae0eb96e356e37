"""The node's registry writer: its writes in order, bounded waits, metadata, and the re-assert.

Every registry write of a node goes through the registry host's ordered writer, so
Redis sees this node's joins, leaves, opens, metadata and re-asserts in the order the
node made them. :class:`~.reassert.LocalRecords` remembers what only the node can
rebuild; :meth:`RegistryWriter.reassert` writes it all back when Redis may have lost it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._protocol.keys import node_of
from .._protocol.scripts import Call, Plan
from .._redis.retry import raise_if_cancelled
from .core import NodeCore
from .reassert import LocalRecords
from .subscriptions import Subscriptions

logger = logging.getLogger(__name__)

MAX_METADATA_BYTES = 4096
T = TypeVar("T")


class RegistryWriter:
    """Writes one node's records to the registry, in order, and re-asserts them."""

    def __init__(
        self, core: NodeCore, subscriptions: Subscriptions, channel_count: Callable[[], int]
    ) -> None:
        self._core = core
        self._subscriptions = subscriptions
        self._channel_count = channel_count
        self.host = core.registry_host
        self.calls = core.calls
        self.records = LocalRecords(core.calls, core.id, core.config.group_expiry)
        self.host.on_master_switch(self._registry_moved)

    def submit(self, call: Call[T] | Sequence[Call[T]]) -> asyncio.Future[T]:
        """Queue a write (or several) after every one submitted before it.

        The future is the (first) call's result, set once every call has run; the first
        failure is raised instead.
        """
        if isinstance(call, Call):
            return self.host.writer.submit(call)
        return self.host.writer.submit_all(call)

    def submit_quietly(self, call: Call[Any] | Sequence[Call[Any]]) -> None:
        """Queue writes nobody waits for; a failure is logged (and counted), not raised."""
        for each in [call] if isinstance(call, Call) else call:
            self.host.writer.submit_quietly(each)

    def close_channel(self, channel: str, groups: Sequence[str]) -> None:
        """Forget one of this node's channels and its memberships of ``groups`` (quietly).

        The record goes only after the groups' side succeeded; groups the record named
        beyond ``groups`` are left too. A failure marks the records lost: the next
        re-assert removes what remains.
        """
        *leaves, close = self.calls.close(channel, self._core.id, groups)
        left = [self.submit(leave) for leave in leaves]
        closed = self.submit(close)

        def after(done: asyncio.Future[list[Any]]) -> None:
            results = done.result()
            if any(isinstance(result, BaseException) for result in results):
                self.records.mark_lost()
                return
            extra = set(results[-1]) - set(groups)
            for group in sorted(extra):
                self.submit_quietly(self.calls.leave_group(group, channel, self._core.id))

        asyncio.gather(*left, closed, return_exceptions=True).add_done_callback(after)

    async def run_plan(self, plan: Plan[T]) -> T:
        """Run a plan's steps in order through the ordered writer (after earlier writes)."""
        try:
            calls = next(plan)
            while True:
                results = await asyncio.gather(*(self.submit(call) for call in calls))
                calls = plan.send(list(results))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def run(self, call: Call[T]) -> T:
        """Run a read now, outside the write order (registry queries)."""
        return await self.host.run(call)

    def wait(self, write: asyncio.Future[T]) -> asyncio.Future[T]:
        """What to await for a submitted write. Bounded like a subscription: the host's
        writer fails a write Redis has not confirmed within ``subscribe_timeout`` with
        :class:`RedisUnavailable` (one timer for the writer, not one per caller), so the
        write itself is awaited, with no coroutine or timer of its own per call."""
        return write

    async def set_metadata(self, channel: str, metadata: dict[str, Any]) -> bool:
        """Attach JSON metadata (user id, display name...) to a channel's registry record.

        Returns False (and records nothing) when the registry does not know the channel.
        A channel of this node is known while it exists here: the node keeps its metadata
        and, if Redis lost the record, writes both back with its next re-assert.
        """
        owner = node_of(channel)
        if owner is None:
            raise ValueError(f"{channel!r} is not a process-specific channel")
        if not isinstance(metadata, dict):
            raise TypeError("metadata must be a dict")
        try:
            text = json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata must be JSON-serializable: {exc}") from None
        if len(text) > MAX_METADATA_BYTES:
            raise ValueError(
                f"metadata is {len(text)} bytes of JSON; the limit is {MAX_METADATA_BYTES}"
            )
        # Through the writer, so it is ordered with this node's joins and re-asserts.
        written = self.submit(self.calls.set_metadata(channel, owner, metadata))
        if owner != self._core.id or not (
            self.records.opened(channel) or self._subscriptions.groups_of(channel)
        ):
            found: int = await self.wait(written)
            return bool(found)
        self.records.set_metadata(channel, text)  # before any await: re-asserts include it
        if not await self.wait(written):
            self.records.mark_lost()  # Redis lost the channel's record: re-assert it
        return True

    def loss_counters(self) -> tuple[int, int]:
        """Pub/sub reconnects and failed registry writes so far (signs Redis lost records)."""
        return self._core.reconnects(), self.host.writer.failed_writes

    async def _registry_moved(self, address: tuple[str, int]) -> None:
        """The registry's master switched (Sentinel): re-assert this node's records there.

        Writes the old master took after the replica's promotion, or that had not reached
        the replica, are lost with it; the re-assert is idempotent and ordered.
        """
        if not self._core.registered:
            return
        logger.info("Registry master switched to %s: re-asserting node %s", address, self._core.id)
        self.records.mark_lost()
        await self.reassert_if_lost(True)

    async def reassert_if_lost(self, generation_seen: bool) -> None:
        """Re-assert when the heartbeat's answer or the counters suggest Redis lost records."""
        reason = self.records.loss(generation_seen, *self.loss_counters())
        if reason is None:
            return
        logger.info("Re-asserting node %s's registry records: %s", self._core.id, reason)
        try:
            await self.reassert()
        except Exception as exc:  # the next heartbeat tries again
            raise_if_cancelled()
            logger.warning("Could not re-assert the registry records (%s)", exc)

    async def reassert(self) -> None:
        """Rewrite this node's records in the registry from its memory (idempotent).

        Its node record, every channel record with its groups, join times and metadata,
        the group member sets, its count in each group and the room indexes end up as
        this node's joins, opens and metadata calls would have left them, and records
        Redis holds for this node beyond those are removed. Two steps through the
        ordered writer: the node's records, then each group it is in or has left there.
        Raises :class:`RedisUnavailable` when Redis does not confirm a step within
        ``subscribe_timeout``, or the error of a step that failed; either way the next
        heartbeat tries again.
        """
        records = self.records
        self._core.registered = True
        try:
            calls = records.reassert_calls(self._subscriptions, *self.loss_counters())
            stale = (await self._reassert_step(calls))[-1]
            if stale is None:  # Redis lost data meanwhile: no generation, try again
                records.mark_lost()
                return
            calls = records.reassert_group_calls(
                self._subscriptions, stale, self._channel_count(), self._core.started
            )
            await self._reassert_step(calls)
        except BaseException:
            records.mark_lost()
            raise

    async def _reassert_step(self, calls: list[Call[Any]]) -> list[Any]:
        writes = [self.submit(call) for call in calls]
        results = await self.wait(asyncio.gather(*writes, return_exceptions=True))
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    async def remove_node(self) -> None:
        """At a clean close: remove this node's records now (best effort; the TTL reaps it)."""
        if not self._core.registered:
            return
        try:
            async with asyncio.timeout(self._core.config.subscribe_timeout):
                # Through the writer: after every join or open still queued.
                await self.run_plan(self.calls.reap([self._core.id]))
        except Exception as exc:
            logger.warning("Could not remove this node's records at close: %s", exc)
