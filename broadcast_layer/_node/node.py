"""One event loop's share of the layer: a *node*, composed of parts with one job each.

A node owns the process-specific channels created on its loop (their names carry its
id), the pub/sub subscriptions of the groups those channels are in, and every
background task it starts. The layer calls its parts directly: :attr:`Node.channels`
(send, receive, new_channel, disconnect), :attr:`Node.groups` (group_add, group_discard,
group_send) and :attr:`Node.registry` (metadata, registry reads). :meth:`Node.close`
cancels and awaits every task and closes every connection.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from .. import _metrics, signals
from .._redis import retry
from .._redis.host import Host
from ..conf import LayerConfig
from .channels import Channels
from .control import Control
from .core import NodeCore
from .credit import Credit
from .delivery import Delivery
from .drops import DropLog
from .durable import Durable
from .groups import Groups
from .health import Health, Probe
from .history import History
from .registry_writer import RegistryWriter
from .subscriptions import Subscriptions
from .upkeep import Upkeep

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeStats:
    """A snapshot of one node's local state."""

    node_id: str
    channels: int
    groups: frozenset[str]
    dropped: int
    reconnects: int
    #: Messages that could not be opened: undecodable, forged or replayed.
    rejected: int = 0
    reasserts: int = 0
    #: Reads of history groups' kept messages to fill gaps (after reconnects, or when a
    #: live message skipped offsets), and catch-ups that could not recover everything.
    history_reads: int = 0
    unrecovered: int = 0


class Node:
    """The layer's state and Redis traffic for one event loop: its parts, wired together."""

    def __init__(self, config: LayerConfig, serializer: Any) -> None:
        self.core = core = NodeCore(config, serializer, self._on_message, self._on_connection,
                                    self._on_acknowledged)  # fmt: skip
        self.id = core.id
        self.subscriptions = Subscriptions()
        self.probe = Probe(core)
        self._rejected = DropLog(logger)
        self.credit = Credit(core)
        self.registry = RegistryWriter(core, self.subscriptions, self._channel_count)
        self.control = Control(core, self._rejected, self._apply)
        self.history = History(core, serializer)
        self.durable = Durable(core)
        self.groups = Groups(core, self.subscriptions, self.registry, self.control, self.history)
        self.channels = Channels(core, self.registry, self.groups, self.control, self.credit)
        self.mailboxes = self.channels.mailboxes
        self.delivery = Delivery(core, self.channels, self.groups, self.control,
                                 self.credit, self._rejected, self.probe)  # fmt: skip
        self.upkeep = Upkeep(core, self.channels, self.groups, self.registry, self.credit)
        core.add_background(self.credit.run)
        core.add_background(self.upkeep.run)

    def _on_message(self, pubsub_channel: bytes, data: bytes) -> Awaitable[None] | None:
        return self.delivery.on_message(pubsub_channel, data)

    def _on_acknowledged(self, pubsub_channel: bytes) -> None:
        # A cluster master acknowledged a group again: it reads what it missed now. This
        # is every catch-up of a cluster, whose masters reconnect one by one.
        group = self.core.keys.group_of(pubsub_channel)
        if group is not None:
            self.history.resubscribed(group)

    def _on_connection(self, host: Host, lost: bool) -> None:
        core = self.core
        if not lost:  # resubscribed: history groups read what they missed meanwhile
            if not core.keys.cluster:  # a cluster's read on each acknowledgement instead
                self.history.restored(host)
            if host is core.host_for(self.id):  # a credit marker may have been lost too
                self.credit.resync()
        groups = frozenset(g for g in self.subscriptions.wanted() if core.host_for(g) is host)
        signals.send_connection_event(lost, node_id=self.id, prefix=core.config.prefix,
                                      host=core.hosts.index(host), groups=groups)  # fmt: skip

    async def health(self, timeout: float) -> Health:
        """Probe this node's pub/sub round trip; never raises, answers within ``timeout``."""
        return await self.probe.check(timeout)

    def _channel_count(self) -> int:
        return len(self.channels.mailboxes)

    async def _apply(self, op: dict[str, str]) -> bool:
        """Apply an operation another node asked for; whether this node has the channel."""
        kind, channel = op.get("op"), op.get("channel", "")
        found = channel in self.channels.mailboxes
        if kind == "group_add" and found:
            await self.groups.add(op["group"], channel)
        elif kind == "group_discard":
            await self.groups.discard(op["group"], channel)
        elif kind == "disconnect":
            await self.channels.disconnect(channel)
        return found

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun."""
        return self.core.closed

    def stats(self) -> NodeStats:
        """Counts and groups of this node, for monitoring and tests."""
        return NodeStats(
            node_id=self.id,
            channels=len(self.channels.mailboxes),
            groups=frozenset(self.subscriptions.wanted()),
            dropped=self.channels.dropped,
            reconnects=self.core.reconnects(),
            rejected=self._rejected.count,
            reasserts=self.registry.records.reasserts,
            history_reads=self.history.reads,
            unrecovered=self.history.unrecovered,
        )

    async def ping(self) -> None:
        """PING every host (raises redis-py's ConnectionError when one is down)."""
        for host in self.core.hosts:
            await retry.call(host.client.ping, idempotent=True, what="PING")

    async def flush_keys(self) -> None:
        """Delete every key of this prefix on every host (SCAN, never KEYS; idempotent)."""
        for host in self.core.hosts:
            flush = functools.partial(self._flush_host, host)
            await retry.call(flush, idempotent=True, what="flush")

    async def _flush_host(self, host: Host) -> None:
        for pattern in self.core.keys.patterns():
            batch = [key async for key in host.client.scan_iter(match=pattern, count=1000)]
            if batch:
                await host.client.unlink(*batch)

    async def close_pools(self) -> None:
        """Close the command connections of every host; they reopen on next use."""
        for host in self.core.hosts:
            await host.close_pools()

    async def close(self) -> None:
        """Cancel and await every task, close every connection (idempotent)."""
        if self.core.closed:
            return
        self.core.closed = True
        _metrics.recorder.channels(-len(self.channels.mailboxes))
        self.credit.wake()
        await self.core.close_tasks()
        await self.credit.close()  # no key of this node's is left to refuse sends
        await self.durable.close()  # acknowledge what this node received
        await self.registry.remove_node()  # a clean shutdown removes its records at once
        for host in self.core.hosts:
            await host.close()
