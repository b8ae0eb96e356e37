"""Upkeep: one node's periodic tick (sweep, expiry, heartbeat, reaping, re-assert).

Every ``min(heartbeat_interval, group_expiry, expiry)`` seconds the node abandons idle
channels, expires old memberships, refreshes its record, reaps dead nodes and
re-asserts its records when Redis may have lost them. A timer, not a hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .._protocol.scripts import Call
from .._redis.errors import CONNECTION_ERRORS
from .._redis.retry import raise_if_cancelled
from .channels import Channels
from .core import NodeCore
from .groups import Groups
from .registry_writer import RegistryWriter

logger = logging.getLogger(__name__)


class Upkeep:
    """The heartbeat loop of one node."""

    def __init__(
        self, core: NodeCore, channels: Channels, groups: Groups, registry: RegistryWriter
    ) -> None:
        self._core = core
        self._channels = channels
        self._groups = groups
        self._registry = registry

    async def run(self) -> None:
        """Tick until the node closes; a failed tick is logged and the next one tries again."""
        config = self._core.config
        # Also the sweep's tick: an idle channel is abandoned at most one tick late.
        interval = min(config.heartbeat_interval, config.group_expiry, config.expiry)
        while not self._core.closed:
            await asyncio.sleep(interval)  # a timer, not a hot path
            try:
                await self._tick(time.monotonic())
            except CONNECTION_ERRORS as exc:
                raise_if_cancelled()
                logger.warning("Heartbeat failed (%s); retrying in %.1fs", exc, interval)

    async def _tick(self, now: float) -> None:
        core, registry = self._core, self._registry
        self._channels.sweep(now)
        self._channels.full_log.flush()
        emptied = self._groups.expire(now)
        calls: list[Call[Any]] = []
        if core.registered:
            calls.append(core.calls.heartbeat(core.id, core.started, len(self._channels.mailboxes)))
        calls.append(core.calls.reap())
        if emptied:
            await self._groups.unsubscribe(emptied)
        results = await registry.host.run_all(calls)
        for failure in results:
            if isinstance(failure, Exception):
                logger.warning("Heartbeat call failed: %s", failure)
        if core.registered and not isinstance(results[0], Exception):
            await registry.reassert_if_lost(generation_seen=bool(results[0]))
