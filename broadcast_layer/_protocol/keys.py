"""Every Redis key and pub/sub channel name the layer uses is built here, nowhere else.

Keys that belong to one group, channel or node carry that name in a ``{hash tag}``,
so the data layout needs no migration for Redis Cluster; the registry's Lua scripts
still touch several slots at once and would have to be split per slot first.
See docs/architecture.md.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Names under one ``prefix``."""

    prefix: str

    def group_channel(self, group: str) -> str:
        """Pub/sub channel a group's messages are published on."""
        return f"{self.prefix}:group:{group}"

    def node_channel(self, node_id: str) -> str:
        """Pub/sub channel carrying messages for one node's process-specific channels."""
        return f"{self.prefix}:node:{node_id}"

    def queue(self, channel: str) -> str:
        """List holding a normal (non ``!``) channel's messages."""
        return f"{self.prefix}:queue:{{{channel}}}"

    def inflight(self, channel: str) -> str:
        """Counter of messages sent to a process-specific channel and not yet received."""
        return f"{self.prefix}:inflight:{{{channel}}}"

    def durable(self, channel: str) -> str:
        """Stream of a durable worker channel, read by one consumer group."""
        return f"{self.prefix}:durable:{{{channel}}}"

    def members(self, group: str) -> str:
        """Sorted set of a group's members (channel -> join time)."""
        return f"{self.prefix}:members:{{{group}}}"

    def member_nodes(self, group: str) -> str:
        """Hash of the nodes holding a group's members: node id -> how many."""
        return f"{self.prefix}:members:{{{group}}}:nodes"

    def history(self, group: str) -> str:
        """Stream of a history group's messages; entry ids are ``0-<offset>``."""
        return f"{self.prefix}:history:{{{group}}}"

    def history_meta(self, group: str) -> str:
        """Hash of a history group's ``epoch`` and ``top`` (its latest offset)."""
        return f"{self.prefix}:history:{{{group}}}:meta"

    @property
    def rooms_by_name(self) -> str:
        """Index of every group with members, all scored 0 so it sorts by name."""
        return f"{self.prefix}:{{rooms}}:by-name"

    @property
    def rooms_by_size(self) -> str:
        """Index of every group with members, scored by member count."""
        return f"{self.prefix}:{{rooms}}:by-size"

    @property
    def nodes(self) -> str:
        """Sorted set of node ids scored by their last heartbeat."""
        return f"{self.prefix}:nodes"

    def node(self, node_id: str) -> str:
        """Hash describing one node (host, pid, heartbeat...); expires with the TTL."""
        return f"{self.prefix}:node:{{{node_id}}}"

    def node_channels(self, node_id: str) -> str:
        """Hash of a node's channels: channel -> JSON record of its groups and metadata."""
        return f"{self.prefix}:node:{{{node_id}}}:channels"

    def node_channels_staging(self, node_id: str) -> str:
        """Where a re-assert builds a node's channel records before they replace the old ones."""
        return f"{self.prefix}:node:{{{node_id}}}:channels:next"

    def patterns(self) -> tuple[str, ...]:
        """Globs matching every key the layer stores under this prefix, and no other's.

        For ``flush`` and the ACL user. ``conf`` refuses prefixes with ``:`` or glob
        characters, so ``<prefix>:`` is never the start of another prefix's keys
        (``site`` vs ``site2``, ``a`` vs ``a:b``) and needs no escaping.
        """
        prefix = self.prefix
        return (
            f"{prefix}:queue:*",
            f"{prefix}:inflight:*",
            f"{prefix}:history:*",
            f"{prefix}:durable:*",
            f"{prefix}:members:*",
            f"{prefix}:{{rooms}}:*",
            f"{prefix}:nodes",
            f"{prefix}:node:*",
        )

    def channel_patterns(self) -> tuple[str, ...]:
        """Globs matching every pub/sub channel the layer uses (for the ACL user).

        Like :meth:`patterns`, no other prefix's channels match them.
        """
        return f"{self.prefix}:group:*", f"{self.prefix}:node:*"


def shard_index(name: str, ring_size: int) -> int:
    """Consistent hash of a group or channel name onto one of ``ring_size`` hosts.

    Same mapping as channels_redis (CRC32 onto a 4096-slot ring), so both layers
    place a name on the same host.
    """
    if ring_size == 1:
        return 0
    return int((binascii.crc32(name.encode()) & 0xFFF) / (4096 / ring_size))


def node_of(channel: str) -> str | None:
    """The id of the node owning a process-specific channel, None for a normal channel.

    Names look like ``<prefix>.<node id>!<local part>`` (see ``Node.new_channel``).
    """
    bang = channel.find("!")
    if bang < 0:
        return None
    return channel[:bang].rpartition(".")[2]
