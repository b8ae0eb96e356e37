"""Every write call of the protocol: a node's registry records, its re-assert, and sends.

Each method builds a :class:`~.scripts.Call` (one Lua script, its keys and arguments,
how to read its reply); nothing here does I/O. The reads, which parse into the public
record types, are built in ``broadcast_layer/registry.py``.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..exceptions import ChannelFull
from . import scripts
from .keys import Keys, node_of
from .scripts import Call, Plan, publish_command

#: Channels (or groups) per re-assert script: Redis runs nothing else while a script runs.
CHUNK = 200
#: Groups (and nodes) whose key names a node keeps built, before it starts over.
KEY_CACHE = 4096
#: A join time in Redis this close (seconds) to the one the node computes is kept as is,
#: so repeated re-asserts rewrite identical values instead of moving them by a few ms.
JOIN_TOLERANCE = 1.0


def text(value: Any) -> str:
    """A reply element as ``str`` (the clients do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)


class RecordCalls:
    """The registry writes a node makes for the channels it owns (or holds).

    A membership has a group's side and a node's side, in two slots on a cluster, so
    joining or leaving is two calls there (the group's first); each is idempotent and the
    node's ordered writer sends both in one round trip. On one server both sides are one
    call (Redis parses and dispatches one script call instead of two).
    """

    def __init__(self, keys: Keys, node_ttl: float) -> None:
        self.keys = keys
        self.node_ttl = node_ttl
        # Key names of the groups and nodes written recently: a join builds four of them.
        self._group_keys: dict[str, tuple[str, ...]] = {}
        self._record_keys: dict[str, tuple[str, ...]] = {}

    def _keys_of_group(self, group: str) -> tuple[str, ...]:
        names = self._group_keys.get(group)
        if names is None:
            if len(self._group_keys) >= KEY_CACHE:
                self._group_keys.clear()
            keys = self.keys
            names = self._group_keys[group] = (
                keys.members(group), keys.member_nodes(group), *keys.rooms_of(group))  # fmt: skip
        return names

    def _records_of(self, node_id: str) -> tuple[str, ...]:
        names = self._record_keys.get(node_id)
        if names is None:
            if len(self._record_keys) >= KEY_CACHE:
                self._record_keys.clear()
            names = self._record_keys[node_id] = (self.keys.node_records(node_id),)
        return names

    def _group_side(self, script: str, group: str, channel: str, node_id: str) -> Call[int]:
        return Call(script, self._keys_of_group(group), (group, channel, node_id), int)

    def join(self, group: str, channel: str, node_id: str) -> list[Call[int]]:
        """Add a membership: JOIN_GROUP (1: a new one, 0: refreshed), then JOIN_RECORD;
        on one server, JOIN, which runs both (same result)."""
        if not self.keys.cluster:
            return [self._both_sides(scripts.JOIN, group, channel, node_id)]
        record = Call(scripts.JOIN_RECORD, self._records_of(node_id), (group, channel), int)
        return [self._group_side(scripts.JOIN_GROUP, group, channel, node_id), record]

    def leave(self, group: str, channel: str, node_id: str) -> list[Call[int]]:
        """Remove a membership: LEAVE_GROUP (1 if one was removed), then LEAVE_RECORD;
        on one server, LEAVE, which runs both (same result)."""
        if not self.keys.cluster:
            return [self._both_sides(scripts.LEAVE, group, channel, node_id)]
        record = Call(scripts.LEAVE_RECORD, self._records_of(node_id), (group, channel), int)
        return [self.leave_group(group, channel, node_id), record]

    def _both_sides(self, script: str, group: str, channel: str, node_id: str) -> Call[int]:
        keys = self._keys_of_group(group) + self._records_of(node_id)
        return Call(script, keys, (group, channel, node_id), int)

    def leave_group(self, group: str, channel: str, node_id: str) -> Call[int]:
        """The group's side of a leave alone (LEAVE_GROUP)."""
        return self._group_side(scripts.LEAVE_GROUP, group, channel, node_id)

    def open(self, channel: str, node_id: str) -> Call[int]:
        """Record a channel made by ``new_channel`` (OPEN)."""
        return Call(scripts.OPEN, [self.keys.node_records(node_id)], [channel], int)

    def close(self, channel: str, node_id: str, groups: Sequence[str]) -> list[Call[Any]]:
        """Forget a channel: leave ``groups`` (LEAVE_GROUP each), then its record.

        The last call (CLOSE_RECORD) returns the groups the record still named; a caller
        leaves those too (:meth:`leave_group`).
        """
        keys = [self.keys.node_records(node_id), self.keys.node_metadata(node_id)]
        close = Call(scripts.CLOSE_RECORD, keys, [channel],
                     lambda reply: [text(group) for group in reply])  # fmt: skip
        return [*(self.leave_group(group, channel, node_id) for group in groups), close]

    def set_metadata(self, channel: str, node_id: str, metadata: dict[str, Any]) -> Call[int]:
        """Replace a channel's metadata; 0 when the registry does not know the channel."""
        return Call(
            scripts.SET_METADATA,
            [self.keys.node_records(node_id), self.keys.node_metadata(node_id)],
            [channel, json.dumps(metadata)], int,
        )  # fmt: skip

    def heartbeat(
        self, node_id: str, started: float, channels: int, birth: bool = False
    ) -> Call[int]:
        """Refresh the node's record; 0 when it had no generation (its records may be lost).

        ``birth``: the node's first record, which also gets generation 0 (a new node has
        lost nothing). Send it through the node's ordered writer before its other records.
        """
        return Call(
            scripts.HEARTBEAT,
            [self.keys.node(node_id), self.keys.nodes_of(node_id)],
            [node_id, socket.gethostname(), os.getpid(), started, channels, self.keys.prefix,
             self.node_ttl, "0" if birth else ""],
            int,
        )  # fmt: skip

    def find_dead(
        self, shards: Sequence[int] | None = None, limit: int = 10
    ) -> list[Call[list[str]]]:
        """DEAD calls: up to ``limit`` dead nodes in each node index shard (default: all)."""
        every = range(self.keys.shards) if shards is None else shards
        return [Call(scripts.DEAD, [self.keys.nodes(shard)], [self.node_ttl, limit], _texts)
                for shard in every]  # fmt: skip

    def reap(
        self, node_ids: Sequence[str] = (), shards: Sequence[int] | None = None, limit: int = 10
    ) -> Plan[list[str]]:
        """Forget dead nodes (or exactly ``node_ids``) and all their memberships.

        Dead nodes are looked for in the node index ``shards`` (default: all), at most
        ``limit`` per shard. Steps: find them (DEAD), read their channel records, leave
        every group those name (LEAVE_GROUP), then drop their records (RETIRE). A reap
        cut short leaves the node listed, so the next one finishes it.
        """
        keys = self.keys
        ids = list(node_ids)
        if not ids:
            found = yield self.find_dead(shards, limit)
            ids = [node_id for shard_ids in found for node_id in shard_ids]
        if not ids:
            return []
        read = [keys.node_records(node_id) for node_id in ids]
        records = yield [Call(scripts.HGETALL, [key], [], _groups_by_channel) for key in read]
        leaves = [self.leave_group(group, channel, node_id)
                  for node_id, channels in zip(ids, records, strict=True)
                  for channel, groups in channels for group in groups]  # fmt: skip
        if leaves:
            yield leaves
        yield [Call(scripts.RETIRE, [keys.node_records(node_id), keys.node_metadata(node_id),
                                     keys.node(node_id), keys.nodes_of(node_id)], [node_id], int)
               for node_id in ids]  # fmt: skip
        return ids

    def reassert_records(
        self, node_id: str, entries: list[list[Any]], generation: int
    ) -> list[Call[Any]]:
        """The node's side of a re-assert: its channel records become ``entries``.

        ``entries`` are ``[channel, seconds since opened or -1, metadata JSON, [[group,
        seconds since joined], ...] sorted by group]``. The last call's result is the
        memberships the old records held beyond these, ``[(group, channel), ...]``, or
        None when Redis lost data meanwhile (nothing was swapped).
        """
        keys = self.keys
        records, staging = keys.node_records(node_id), keys.node_records_staging(node_id)
        metadata = keys.node_metadata(node_id)
        metadata_staging = keys.node_metadata_staging(node_id)
        both = [records, staging, metadata, metadata_staging]
        calls: list[Call[Any]] = [
            Call(scripts.REASSERT_BEGIN, [staging, metadata_staging], [], int)
        ]
        for chunk in _chunks(entries, CHUNK):
            calls.append(Call(scripts.REASSERT_CHANNELS, both,
                              [JOIN_TOLERANCE, json.dumps(chunk)], int))  # fmt: skip
        calls.append(Call(scripts.REASSERT_SWAP, [*both, keys.node(node_id)],
                          [generation], _stale))  # fmt: skip
        return calls

    def reassert_group(
        self, group: str, node_id: str, members: dict[str, float], stale: Sequence[str]
    ) -> Call[int]:
        """The group's side of a re-assert: the node holds exactly ``members`` (channel ->
        seconds since it joined) in ``group``; ``stale`` channels are removed."""
        keys = self.keys
        pairs = [value for channel, age in members.items() for value in (channel, age)]
        return Call(
            scripts.REASSERT_GROUP,
            [keys.members(group), keys.member_nodes(group), *keys.rooms_of(group)],
            [group, node_id, JOIN_TOLERANCE, len(members), *pairs, *stale],
            int,
        )


def _texts(reply: Any) -> list[str]:
    return [text(item) for item in reply]


def parse_record(raw: bytes | str) -> tuple[str, dict[str, str]]:
    """A channel record (``<opened>|<group> <joined>|...``) as its opened time (``""``:
    unknown) and ``{group: joined}``, times as Redis wrote them (seconds, text)."""
    opened, *entries = text(raw).split("|")
    groups = {}
    for entry in entries:
        group, _, joined = entry.partition(" ")
        groups[group] = joined
    return opened, groups


def _groups_by_channel(reply: Any) -> list[tuple[str, list[str]]]:
    """An HGETALL of a node's channel records as ``[(channel, [group, ...]), ...]``."""
    return [(text(reply[i]), list(parse_record(reply[i + 1])[1])) for i in range(0, len(reply), 2)]


def _stale(reply: Any) -> list[tuple[str, str]] | None:
    if int(reply[0]) < 0:
        return None
    flat = [text(item) for item in reply[1:]]
    return list(zip(flat[::2], flat[1::2], strict=True))


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


#: A node-channel payload starting with this byte is the owning node's credit marker:
#: ``=`` and a sequence number, published by CREDIT after its writes (no channel name
#: starts with ``=``).
CREDIT_MARK = b"="


def channel_send(
    keys: Keys, channel: str, data: bytes, capacity: int, expiry: float
) -> tuple[str, Call[int]]:
    """The script that sends ``data`` to a channel through Redis, and the name to shard by.

    A normal channel is a Redis list (PUSH, checked against ``capacity``); a
    process-specific one is published to its owning node (SEND_TO_NODE), which keeps
    the channel's credit itself. The call's result is the number of nodes reached (1 for
    a queued message); it raises ChannelFull.
    """
    owner = node_of(channel)
    if owner is None:
        expiry_ms = int(expiry * 1000)
        stamped = b"%013d" % int(time.time() * 1000) + data
        args = [capacity, expiry_ms, stamped[:13], stamped]
        return channel, Call(scripts.PUSH, [keys.queue(channel)], args, _full_if(0, channel))
    head, call_keys, full = _to_node(keys, channel, owner)
    args = [head + data, publish_command(keys.cluster)]
    return owner, Call(scripts.SEND_TO_NODE, call_keys, args, full)


@functools.lru_cache(maxsize=4096)
def _to_node(
    keys: Keys, channel: str, owner: str
) -> tuple[bytes, tuple[str, str], Callable[[Any], int]]:
    """What every send to one process-specific channel shares (a sender's few hot
    channels are looked up, not rebuilt): the payload's head, the keys, the parser."""
    head = channel.encode() + b"\n"
    return head, (keys.credit(channel), keys.node_channel(owner)), _full_if(-1, channel)


def credit(
    keys: Keys, node_id: str, ops: Sequence[tuple[str, str]], ttl: float, marker: int | None
) -> Call[list[bool]]:
    """One CREDIT call for channels of ``node_id``: ``ops`` are (channel, operation) as
    the script takes them; ``marker`` (a sequence number), when given, is published on
    the node's channel after the writes. The result says, per channel, whether its key
    exists afterwards."""
    call_keys = [*(keys.credit(channel) for channel, _ in ops), keys.node_channel(node_id)]
    mark = b"" if marker is None else CREDIT_MARK + b"%d" % marker
    args = [int(ttl * 1000), publish_command(keys.cluster), mark, *(op for _, op in ops)]
    return Call(scripts.CREDIT, call_keys, args, _flags)


def _flags(reply: Any) -> list[bool]:
    return [bool(int(item)) for item in reply]


def _full_if(full: int, channel: str) -> Callable[[Any], int]:
    def parse(reply: Any) -> int:
        if int(reply) == full:
            raise ChannelFull(channel)
        return int(reply)

    return parse
