"""Upkeep: one node's periodic tick (sweep, expiry, heartbeat, reaping, re-assert).

Every ``min(heartbeat_interval, group_expiry, expiry)`` seconds the node abandons idle
channels, expires old memberships, refreshes its record and its channels' credit keys,
reaps dead nodes and re-asserts its records when Redis may have lost them. A timer, not
a hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .._redis.retry import raise_if_cancelled
from .channels import Channels
from .core import NodeCore
from .credit import Credit
from .groups import Groups
from .registry_writer import RegistryWriter

logger = logging.getLogger(__name__)

#: Node index shards one tick looks for dead nodes in (all of them off a cluster).
REAP_SHARDS = 6


class Upkeep:
    """The heartbeat loop of one node."""

    def __init__(
        self,
        core: NodeCore,
        channels: Channels,
        groups: Groups,
        registry: RegistryWriter,
        credit: Credit,
    ) -> None:
        self._core = core
        self._credit = credit
        self._channels = channels
        self._groups = groups
        self._registry = registry
        self._next_shard = 0

    async def run(self) -> None:
        """Tick until the node closes; a failed tick is logged and the next one tries again."""
        config = self._core.config
        # Also the sweep's tick: an idle channel is abandoned at most one tick late.
        interval = min(config.heartbeat_interval, config.group_expiry, config.expiry)
        while not self._core.closed:
            await asyncio.sleep(interval)  # a timer, not a hot path
            try:
                await self._tick(time.monotonic())
            except Exception as exc:  # not only connection errors: a dead loop is a dead node
                raise_if_cancelled()
                logger.warning("Heartbeat failed (%s); retrying in %.1fs", exc, interval)
            # A cancellation redis-py swallowed in a tick that then succeeded would keep
            # this loop ticking, and asyncio.run() waiting for it (see Credit.run).
            raise_if_cancelled()

    async def _tick(self, now: float) -> None:
        core, registry = self._core, self._registry
        self._channels.sweep(now)
        self._channels.full_log.flush()
        self._credit.renew()  # the keys' TTL (node_ttl) outlasts a tick
        emptied = self._groups.expire(now)
        if emptied:
            await self._groups.unsubscribe(emptied)
        if core.beating:
            beat = core.calls.heartbeat(core.id, core.started, len(self._channels.mailboxes))
            [result] = await registry.host.run_all([beat])
            if isinstance(result, Exception):
                logger.warning("Heartbeat call failed: %s", result)
            else:
                await registry.reassert_if_lost(generation_seen=bool(result))
        try:
            await registry.host.run_plan(core.calls.reap(shards=self._reap_shards()))
        except Exception as exc:  # the next tick tries again
            raise_if_cancelled()
            logger.warning("Reaping dead nodes failed: %s", exc)

    def _reap_shards(self) -> list[int]:
        """The node index shards this tick looks for dead nodes in: a window that moves
        on each tick, so a cluster's shards are all visited every few ticks."""
        shards = self._core.keys.shards
        first, self._next_shard = self._next_shard, (self._next_shard + REAP_SHARDS) % shards
        return sorted({(first + i) % shards for i in range(min(REAP_SHARDS, shards))})
