"""Every write call of the protocol: a node's registry records, its re-assert, and sends.

Each method builds a :class:`~.scripts.Call` (one Lua script, its keys and arguments,
how to read its reply); nothing here does I/O. The reads, which parse into the public
record types, are built in ``broadcast_layer/registry.py``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..exceptions import ChannelFull
from . import scripts
from .keys import Keys, node_of
from .scripts import Call

#: Channels (or groups) per re-assert script: Redis runs nothing else while a script runs.
CHUNK = 200
#: A join time in Redis this close (seconds) to the one the node computes is kept as is,
#: so repeated re-asserts rewrite identical values instead of moving them by a few ms.
JOIN_TOLERANCE = 1.0


def text(value: Any) -> str:
    """A reply element as ``str`` (the clients do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)


class RecordCalls:
    """The registry writes a node makes for the channels it owns (or holds)."""

    def __init__(self, keys: Keys, node_ttl: float) -> None:
        self.keys = keys
        self.node_ttl = node_ttl

    def _membership(self, script: str, group: str, channel: str, node_id: str) -> Call[int]:
        keys = self.keys
        return Call(
            script,
            [keys.members(group), keys.rooms_by_size, keys.rooms_by_name,
             keys.node_channels(node_id), keys.member_nodes(group)],
            [group, channel, node_id],
            int,
        )  # fmt: skip

    def join(self, group: str, channel: str, node_id: str) -> Call[int]:
        """Add a membership (JOIN)."""
        return self._membership(scripts.JOIN, group, channel, node_id)

    def leave(self, group: str, channel: str, node_id: str) -> Call[int]:
        """Remove a membership (LEAVE)."""
        return self._membership(scripts.LEAVE, group, channel, node_id)

    def open(self, channel: str, node_id: str) -> Call[int]:
        """Record a channel made by ``new_channel`` (OPEN)."""
        return Call(scripts.OPEN, [self.keys.node_channels(node_id)], [channel], int)

    def close(self, channel: str, node_id: str) -> Call[int]:
        """Forget a channel and its memberships (CLOSE)."""
        keys = self.keys
        return Call(
            scripts.CLOSE,
            [keys.node_channels(node_id), keys.rooms_by_size, keys.rooms_by_name],
            [keys.prefix, channel, node_id],
            int,
        )

    def set_metadata(self, channel: str, node_id: str, metadata: dict[str, Any]) -> Call[int]:
        """Replace a channel's metadata; 0 when the registry does not know the channel."""
        return Call(
            scripts.SET_METADATA, [self.keys.node_channels(node_id)],
            [channel, json.dumps(metadata)], int,
        )  # fmt: skip

    def heartbeat(self, node_id: str, started: float, channels: int) -> Call[int]:
        """Refresh the node's record; 0 when it had no generation (its records may be lost)."""
        return Call(
            scripts.HEARTBEAT,
            [self.keys.node(node_id), self.keys.nodes],
            [node_id, socket.gethostname(), os.getpid(), started, channels, self.keys.prefix,
             self.node_ttl],
            int,
        )  # fmt: skip

    def reap(self, node_ids: Sequence[str] = (), limit: int = 10) -> Call[list[str]]:
        """Forget dead nodes (or exactly ``node_ids``) and all their memberships."""
        keys = self.keys
        return Call(
            scripts.REAP,
            [keys.nodes, keys.rooms_by_size, keys.rooms_by_name],
            [keys.prefix, self.node_ttl, limit, *node_ids],
            lambda reply: [text(node_id) for node_id in reply],
        )

    def reassert(
        self, node_id: str, entries: list[list[Any]], counts: list[str | int], generation: int
    ) -> list[Call[Any]]:
        """The scripts that replace a node's records by ``entries`` and its group ``counts``.

        ``entries`` are ``[channel, seconds since opened or -1, metadata JSON, {group:
        seconds since joined}]``; ``counts`` alternate group and member count.
        """
        keys = self.keys
        records, staging = keys.node_channels(node_id), keys.node_channels_staging(node_id)
        calls: list[Call[Any]] = [Call(scripts.REASSERT_BEGIN, [staging], [], int)]
        for chunk in _chunks(entries, CHUNK):
            calls.append(
                Call(
                    scripts.REASSERT_CHANNELS,
                    [records, staging],
                    [keys.prefix, JOIN_TOLERANCE, json.dumps(chunk)],
                    int,
                )
            )
        rooms = [keys.rooms_by_size, keys.rooms_by_name]
        calls.append(
            Call(
                scripts.REASSERT_SWAP,
                [records, staging, *rooms, keys.node(node_id)],
                [keys.prefix, node_id, generation],
                int,
            )
        )
        for pairs in _chunks(counts, 2 * CHUNK):
            calls.append(Call(scripts.REASSERT_GROUPS, rooms, [keys.prefix, node_id, *pairs], int))
        return calls


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def channel_send(
    keys: Keys, channel: str, data: bytes, capacity: int, expiry: float
) -> tuple[str, Call[int]]:
    """The script that sends ``data`` to a channel through Redis, and the name to shard by.

    A normal channel is a Redis list (PUSH); a process-specific one is published to its
    owning node after the in-flight count is checked (SEND_TO_NODE). The call's result
    is the number of nodes reached (1 for a queued message); it raises ChannelFull.
    """
    expiry_ms = int(expiry * 1000)
    owner = node_of(channel)
    if owner is None:
        stamped = b"%013d" % int(time.time() * 1000) + data
        args = [capacity, expiry_ms, stamped[:13], stamped]
        return channel, Call(scripts.PUSH, [keys.queue(channel)], args, _full_if(0, channel))
    payload = channel.encode() + b"\n" + data
    args = [capacity, expiry_ms, keys.node_channel(owner), payload]
    return owner, Call(scripts.SEND_TO_NODE, [keys.inflight(channel)], args, _full_if(-1, channel))


def release(keys: Keys, channel: str, count: int) -> Call[int]:
    """Give back ``count`` in-flight slots of a process-specific channel (RELEASE)."""
    return Call(scripts.RELEASE, [keys.inflight(channel)], [count], int)


def _full_if(full: int, channel: str) -> Callable[[Any], int]:
    def parse(reply: Any) -> int:
        if int(reply) == full:
            raise ChannelFull(channel)
        return int(reply)

    return parse
