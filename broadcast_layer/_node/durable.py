"""Durable worker channels on one node: sends, competing receives, acknowledgements.

A message taken by ``receive`` stays pending in Redis until the same node receives on
that channel again or closes cleanly; if its process dies first, another receiver takes
it over after ``claim_after`` seconds. At least once: see docs/history.md.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import ResponseError

from .._protocol.durable import CONSUMER_GROUP, DurableCalls, DurablePolicy, consumer_name
from .._redis import retry
from .._redis.clients import blocking_timeout
from .._redis.errors import CONNECTION_ERRORS
from .._redis.retry import raise_if_cancelled
from ..exceptions import ChannelFull
from .core import NodeCore

logger = logging.getLogger(__name__)


class Durable:
    """``send`` and ``receive`` of the durable channels, for one node."""

    def __init__(self, core: NodeCore) -> None:
        self._core = core
        self.calls = DurableCalls(core.keys)
        self.consumer = consumer_name()
        self._unacked: dict[str, list[str]] = {}  # channel -> ids received, not acknowledged

    async def send(self, channel: str, data: bytes) -> None:
        """Queue a message (not retried once sent); ``ChannelFull`` at capacity."""
        core = self._core
        call = self.calls.send(channel, core.config.capacity_for(channel), data)
        if not await core.host_for(channel).run(call):
            raise ChannelFull(channel)

    async def receive(self, channel: str, policy: DurablePolicy) -> dict[str, Any]:
        """Acknowledge this node's previous messages of ``channel``, return the next one.

        Blocks in Redis (no polling) until a message comes; a message another consumer
        left pending for ``claim_after`` comes first. Waits out outages, as BLPOP does.
        """
        core = self._core
        host = core.host_for(channel)
        block_ms = int(min(policy.claim_after, blocking_timeout(host.client)) * 1000)
        retrying = retry.Retrying(core.config.reconnect_backoff)
        while True:
            raise_if_cancelled()
            acks = self._unacked.pop(channel, [])
            try:
                entry = await host.run(self.calls.next(channel, policy, self.consumer, acks))
                if entry is None:
                    entry = await self._read_new(channel, block_ms)
            except (*CONNECTION_ERRORS, ResponseError) as exc:
                raise_if_cancelled()
                self._unacked.setdefault(channel, []).extend(acks)  # XACK twice is harmless
                delay = retrying.next_delay()
                logger.warning("Durable receive on %s failed (%s); retrying in %.2fs",
                               channel, exc, delay)  # fmt: skip
                await asyncio.sleep(delay)
                continue
            retrying.reset()
            if entry is None:
                continue
            entry_id, data = entry
            self._unacked.setdefault(channel, []).append(entry_id)
            try:
                return core.decode(data)
            except Exception:  # e.g. encrypted with a key this node lacks
                logger.exception("Dropped an undecodable message from %s", channel)

    async def _read_new(self, channel: str, block_ms: int) -> tuple[str, bytes] | None:
        client = self._core.host_for(channel).client
        reply: Any = await client.xreadgroup(
            CONSUMER_GROUP, self.consumer, {self._core.keys.durable(channel): ">"},
            count=1, block=block_ms,
        )  # fmt: skip
        for _, entries in reply or ():
            for entry_id, fields in entries:
                raw_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                return raw_id, bytes(fields[b"m"])
        return None

    async def close(self) -> None:
        """Acknowledge every message this node received (a clean shutdown); logs failures."""
        unacked, self._unacked = self._unacked, {}
        for channel, ids in unacked.items():
            if not ids:
                continue
            try:
                await self._core.host_for(channel).run(self.calls.ack(channel, ids))
            except CONNECTION_ERRORS as exc:  # they are taken over after claim_after
                logger.warning("Could not acknowledge %d messages of %s: %s",
                               len(ids), channel, exc)  # fmt: skip
