"""A node's own registry records as its memory holds them, and the re-assert that rewrites them.

The node is the truth about its channels, memberships and metadata. Redis can lose or
miss its writes (``FLUSHALL``, a restart without persistence, a failover to a replica
that lagged, writes that failed during an outage); the re-assert makes the registry
equal the node's state again. See docs/reliability.md.
"""

from __future__ import annotations

import time
from typing import Any

from .._protocol.records import RecordCalls
from .._protocol.scripts import Call
from .subscriptions import Subscriptions


class LocalRecords:
    """What the registry holds for one node that only the node can rebuild, and when to.

    Memberships come from the node's :class:`Subscriptions`; this keeps when each
    channel was opened and the metadata the node set on its own channels. It also
    tells the heartbeat when Redis may have lost records: the node's record had no
    generation, a pub/sub connection reconnected, a registry write failed, or someone
    called :meth:`mark_lost`.
    """

    def __init__(self, calls: RecordCalls, node_id: str, group_expiry: float) -> None:
        self._calls = calls
        self._group_expiry = group_expiry
        self._node_id = node_id
        self._opened: dict[str, float] = {}  # channel -> monotonic time of new_channel
        self._metadata: dict[str, str] = {}  # channel -> metadata JSON text
        self._lost = False
        self._seen = (0, 0)  # reconnects and failed writes when the last re-assert began
        self.reasserts = 0

    def open(self, channel: str) -> None:
        """Record a channel made by ``new_channel`` (its registry record outlives its groups)."""
        self._opened[channel] = time.monotonic()

    def set_metadata(self, channel: str, metadata_json: str) -> None:
        """Keep the metadata this node set on one of its channels."""
        self._metadata[channel] = metadata_json

    def forget(self, channel: str) -> None:
        """Drop a channel the node no longer has (abandoned, or never made)."""
        self._opened.pop(channel, None)
        self._metadata.pop(channel, None)

    def opened(self, channel: str) -> bool:
        """Whether the channel was made by ``new_channel`` and not forgotten since."""
        return channel in self._opened

    def mark_lost(self) -> None:
        """Redis may lack some of this node's records: re-assert at the next heartbeat."""
        self._lost = True

    def loss(self, generation_seen: bool, reconnects: int, failed_writes: int) -> str | None:
        """Why the records must be re-asserted now, or None when nothing suggests a loss.

        ``generation_seen`` is the heartbeat's answer; the counters are the node's pub/sub
        reconnects and failed registry writes so far.
        """
        if self._lost:
            return "a registry write was not confirmed"
        if not generation_seen:
            return "the node's record had no generation (new node, or Redis lost its data)"
        if reconnects != self._seen[0]:
            return "a pub/sub connection reconnected"
        if failed_writes != self._seen[1]:
            return "a registry write failed"
        return None

    def _joined(self, subscriptions: Subscriptions) -> dict[str, dict[str, float]]:
        """group -> channel -> seconds since it joined, as the node holds them now."""
        now = time.monotonic()
        return {
            # The deadline was set at the latest group_add: it dates the join.
            group: {
                channel: max(0.0, now - deadline + self._group_expiry)
                for channel, deadline in subscriptions.members(group).items()
            }
            for group in sorted(subscriptions.wanted())
        }

    def reassert_calls(
        self, subscriptions: Subscriptions, reconnects: int, failed_writes: int
    ) -> list[Call[Any]]:
        """The node's side of a re-assert, built from its state now; the last call's
        result is the stale memberships to pass to :meth:`reassert_group_calls`.

        Submit them together through the node's ordered writer: writes submitted before
        them are in the state they describe, writes submitted after them run after them.
        Running them twice leaves Redis as running them once did.
        """
        self._lost = False
        self._seen = (reconnects, failed_writes)
        self.reasserts += 1
        now = time.monotonic()
        joined: dict[str, dict[str, float]] = {channel: {} for channel in self._opened}
        for group, members in self._joined(subscriptions).items():
            for channel, age in members.items():
                joined.setdefault(channel, {})[group] = age
        entries = [
            [
                channel,
                now - self._opened[channel] if channel in self._opened else -1,
                self._metadata.get(channel, ""),
                sorted(groups.items()),  # sorted: the same state gives the same record
            ]
            for channel, groups in joined.items()
        ]
        return self._calls.reassert_records(self._node_id, entries, self.reasserts)

    def reassert_group_calls(
        self,
        subscriptions: Subscriptions,
        stale: list[tuple[str, str]],
        channels: int,
        started: float,
    ) -> list[Call[Any]]:
        """The groups' side of a re-assert, from the node's state now, then the heartbeat.

        ``stale`` memberships (which the old records held) are removed unless the node
        holds them again by now.
        """
        joined = self._joined(subscriptions)
        drop: dict[str, list[str]] = {}
        for group, channel in stale:
            if channel not in joined.get(group, {}):
                drop.setdefault(group, []).append(channel)
        calls: list[Call[Any]] = [
            self._calls.reassert_group(
                group, self._node_id, joined.get(group, {}), drop.get(group, [])
            )
            for group in sorted(joined.keys() | drop.keys())
        ]
        calls.append(self._calls.heartbeat(self._node_id, started, channels))
        return calls
