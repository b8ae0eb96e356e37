"""The chat's presence lists: one registry read per join, then diffs, batched per room per node.

A client gets the room's list once, when it joins (:func:`snapshot`: the first
``PRESENCE_LIMIT`` members and each live node's member count, two registry reads).
After that, it is told what changed:

- ``presence.diff``: each node batches the joins and leaves of its *own* members of a
  room for ``CHAT_PRESENCE_INTERVAL`` seconds and sends them as one group message,
  with the number of members that node now holds. A join costs no registry read and
  no message of its own, and each member gets at most one diff per node per interval
  (more only when over ``DIFF_CHUNK`` people changed on one node in one interval).
- ``presence.gone``: a node that dies cannot say goodbye. Each node checks the live
  node list (one ``nodes()`` read per heartbeat interval, while it has chat members)
  and tells its own members, without Redis, which nodes died; their people go.

Clients see opaque ids (a hash of the channel or node name), never channel names.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from broadcast_layer import ChannelFull, RedisUnavailable
from broadcast_layer.layer import BroadcastChannelLayer

logger = logging.getLogger(__name__)

#: At most this many members in a join's snapshot, whatever the room's size.
PRESENCE_LIMIT = 100
#: Seconds a node collects its members' joins and leaves before sending one diff per room.
DEFAULT_INTERVAL = 0.5
#: People per diff message, so a burst of joins never makes one oversized message.
DIFF_CHUNK = 200

Person = dict[str, str]


def public_id(name: str) -> str:
    """The id clients see for a channel or node: stable, short, and not the name itself."""
    return hashlib.blake2b(name.encode(), digest_size=6).hexdigest()


def person(channel: str, node_id: str, metadata: dict[str, Any]) -> Person:
    """One entry of a presence list: id, display name, node name (shown), node id."""
    return {
        "id": public_id(channel),
        "name": str(metadata.get("name", "?")),
        "node": str(metadata.get("node", "")),
        "node_id": public_id(node_id),
    }


@dataclass
class _Batch:
    """A room's changes on this node since its last diff."""

    joined: dict[str, Person] = field(default_factory=dict)  # channel -> person
    left: set[str] = field(default_factory=set)  # channels


class PresenceHub:
    """One per event loop: the node's chat members per room, their pending diffs, and
    the watch for dead nodes. Its methods do no I/O; its tasks send.
    """

    def __init__(self, layer: BroadcastChannelLayer, interval: float) -> None:
        self.layer = layer
        self.interval = interval
        # A node is dead when its heartbeat is older than node_ttl: look more often.
        config = layer.config
        self.watch_every = min(config.heartbeat_interval, config.node_ttl / 2)
        self.local: dict[str, dict[str, Person]] = {}  # group -> channel -> person
        self.batches: dict[str, _Batch] = {}
        # Nodes whose people a local client may list (from snapshots, and every live
        # node the watch saw): one that drops out of nodes() is announced gone.
        self.seen: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.Task[None]] = {}  # group -> its batch's send
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    # -- called by the consumers --------------------------------------------------------

    def joined(self, group: str, channel: str, entry: Person) -> None:
        """A local member joined ``group`` (after its group_add and metadata)."""
        self.local.setdefault(group, {})[channel] = entry
        batch = self._batch(group)
        batch.left.discard(channel)
        batch.joined[channel] = entry
        if self._watcher is None or self._watcher.done():
            self._watcher = self._spawn(self._watch())

    def left(self, group: str, channel: str) -> None:
        """A local member left ``group`` (idempotent)."""
        room = self.local.get(group)
        if room is None or room.pop(channel, None) is None:
            return
        if not room:
            del self.local[group]
        batch = self._batch(group)
        batch.joined.pop(channel, None)
        # Told even when its join was never sent: a snapshot may have listed it.
        batch.left.add(channel)

    @property
    def closed(self) -> bool:
        return self._closed

    def saw(self, node_ids: set[str]) -> None:
        """A snapshot listed people of these nodes: announce them if they die."""
        self.seen |= node_ids

    # -- sending ------------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("Presence task failed", exc_info=exc)

    def _batch(self, group: str) -> _Batch:
        batch = self.batches.get(group)
        if batch is None:  # the room's first change this interval: send it at the end
            batch = self.batches[group] = _Batch()
            self._timers[group] = self._spawn(self._send_later(group))
        return batch

    async def _send_later(self, group: str) -> None:
        await asyncio.sleep(self.interval)
        del self._timers[group]
        await self._send(group, self.batches.pop(group))

    async def flush(self) -> None:
        """Send every room's pending diff now, not at the end of its interval."""
        for group in list(self.batches):
            self._timers.pop(group).cancel()
            await self._send(group, self.batches.pop(group))

    async def _send(self, group: str, batch: _Batch) -> None:
        joined, left = list(batch.joined.values()), [public_id(c) for c in batch.left]
        node_id = public_id(self.layer.node_id)
        count = len(self.layer.local_members(group))  # in memory: what the registry counts
        try:
            for start in range(0, max(len(joined), len(left), 1), DIFF_CHUNK):
                await self.layer.group_send(group, {
                    "type": "presence.diff", "node_id": node_id, "count": count,
                    "joined": joined[start:start + DIFF_CHUNK],
                    "left": left[start:start + DIFF_CHUNK],
                })  # fmt: skip
        except RedisUnavailable as exc:
            if self._closed:
                return
            # Sent again with the next interval's changes (diffs are idempotent).
            logger.warning("Presence diff for %s not sent, retrying: %s", group, exc)
            newer = self._batch(group)
            newer.joined = {**batch.joined, **newer.joined}
            newer.left |= batch.left - newer.joined.keys()
            for channel in newer.left:
                newer.joined.pop(channel, None)

    # -- dead nodes and channels that ended without a disconnect -------------------------

    async def _watch(self) -> None:
        while self.local:
            await asyncio.sleep(self.watch_every)
            self._reconcile()
            try:
                live = {node.id for node in await self.layer.registry.nodes()}
            except RedisUnavailable:
                continue
            # Read after the await: a snapshot made meanwhile has added its nodes.
            gone, self.seen = self.seen - live, live
            if gone:
                await self._announce_gone(gone)

    def _reconcile(self) -> None:
        """Members the layer dropped (abandoned or expired channels) leave the lists too."""
        for group, room in list(self.local.items()):
            present = self.layer.local_members(group)
            for channel in [channel for channel in room if channel not in present]:
                self.left(group, channel)

    async def _announce_gone(self, node_ids: set[str]) -> None:
        """Tell this node's own members, in memory: every node does the same for its own."""
        message = {"type": "presence.gone", "node_ids": sorted(map(public_id, node_ids))}
        for channel in {channel for room in self.local.values() for channel in room}:
            # A client that far behind gets the whole list again when it reconnects.
            with contextlib.suppress(ChannelFull):
                await self.layer.send(channel, message)

    async def aclose(self) -> None:
        """Send what is pending now and stop every task (idempotent)."""
        self._closed = True
        await self.flush()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# One hub per event loop and layer, like the layer's own nodes.
_hubs: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[BroadcastChannelLayer, PresenceHub]
] = weakref.WeakKeyDictionary()


def hub(layer: BroadcastChannelLayer) -> PresenceHub:
    """The current event loop's hub for ``layer`` (made on first use, or after aclose)."""
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    current = hubs.get(layer)
    if current is None or current.closed:
        interval = float(getattr(settings, "CHAT_PRESENCE_INTERVAL", DEFAULT_INTERVAL))
        current = hubs[layer] = PresenceHub(layer, interval)
    return current


async def snapshot(layer: BroadcastChannelLayer, group: str) -> dict[str, Any]:
    """The room's list as a client starts it: the first PRESENCE_LIMIT members (sorted
    by name), each live node's member count, and the total. Two registry reads, sent
    together.
    """
    registry = layer.registry
    members, per_node = await asyncio.gather(
        registry.members(group, limit=PRESENCE_LIMIT), registry.members_per_node(group)
    )
    people = sorted(
        (person(m.channel, m.node or "", m.metadata) for m in members),
        key=lambda entry: (entry["name"], entry["node"]),
    )
    hub(layer).saw({m.node for m in members if m.node} | set(per_node))
    counts = {public_id(node): count for node, count in per_node.items()}
    return {
        "type": "presence",
        "members": people,
        "counts": counts,
        "total": max(sum(counts.values()), len(people)),
        "limit": PRESENCE_LIMIT,
    }
