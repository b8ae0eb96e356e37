"""Giving back the in-flight slots of process-specific channels, batched.

A send to another node's channel takes a slot in Redis (SEND_TO_NODE counts it); the
receiving node gives it back once the message is received or dropped. Releases made
meanwhile go out together, one RELEASE call per channel, in one pipeline.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from .._protocol import records
from .._redis.errors import CONNECTION_ERRORS
from .._redis.retry import raise_if_cancelled
from .core import NodeCore

logger = logging.getLogger(__name__)


class InflightRelease:
    """Counts slots to give back and releases them from one background loop."""

    def __init__(self, core: NodeCore) -> None:
        self._core = core
        self._to_release: Counter[str] = Counter()
        self._wanted = asyncio.Event()

    def release(self, channel: str) -> None:
        """Give back one slot of ``channel`` (soon, batched with others)."""
        self._to_release[channel] += 1
        self._wanted.set()

    def wake(self) -> None:
        """Wake the loop so it sees the node closed."""
        self._wanted.set()

    async def run(self) -> None:
        """The release loop: one pipeline per wake-up, until the node closes."""
        # Checks `closed` as well as relying on cancellation: redis-py's pipeline can
        # swallow a CancelledError that lands inside execute().
        core = self._core
        host = core.host_for(core.id)  # where senders count this node's channels
        while not core.closed:
            await self._wanted.wait()
            self._wanted.clear()
            batch, self._to_release = self._to_release, Counter()
            calls = [records.release(core.keys, channel, count) for channel, count in batch.items()]
            try:
                await host.run_all(calls)
            except CONNECTION_ERRORS as exc:  # the counters expire by themselves
                raise_if_cancelled()
                logger.warning("Could not release in-flight counters: %s", exc)
