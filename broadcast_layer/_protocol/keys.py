"""Every Redis key and pub/sub channel name the layer uses is built here, nowhere else.

Two layouts, one per deployment. On one server (or Sentinel, or client-side shards) the
names are those of earlier versions: a group's keys carry ``{<group>}``, a node's
``{<node id>}``. On Redis Cluster every name carries the hash tag of one of
:data:`CLUSTER_SHARDS` *shards*: a group's pub/sub channel, its member keys and the
room-index shard that lists it share one tag, and so do a node's pub/sub channel, its
records, the credit keys of its channels and the node-index shard that lists it. So
every Lua script touches one slot, and the cluster-wide indexes are
:data:`CLUSTER_SHARDS` keys spread over the masters instead of one hot key. See
docs/cluster.md.
"""

from __future__ import annotations

import binascii
import functools
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

#: Index shards on a cluster. A multiple of 2, 3, 4, 5, 6, 10, 12 and 15, so a cluster
#: whose slots are split evenly among that many masters (the default) gets as many
#: shards on each. Part of the wire format: nodes sharing a prefix must agree on it.
CLUSTER_SHARDS = 60


@functools.cache
def shard_tags(shards: int) -> tuple[str, ...]:
    """The hash tag of each shard: shard ``k``'s slot lies in the ``k``-th of ``shards``
    equal ranges of the 16384 slots, so the shards spread evenly over the masters of a
    cluster whose slots are split evenly. Deterministic: every process finds the same."""
    tags = []
    for shard in range(shards):
        low = shard * REDIS_CLUSTER_HASH_SLOTS // shards
        high = (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
        tags.append(next(tag for i in range(1_000_000)
                         if low <= key_slot((tag := f"s{shard}.{i}").encode()) < high))  # fmt: skip
    return tuple(tags)


def shard_of(name: str, shards: int) -> int:
    """The index shard a group or node id belongs to (CRC32, so stable across versions)."""
    return binascii.crc32(name.encode()) % shards


@dataclass(frozen=True)
class Keys:
    """Names under one ``prefix``, in the standalone layout or (``cluster``) the sharded one."""

    prefix: str
    cluster: bool = False

    @property
    def shards(self) -> int:
        """How many shards the room and node indexes have (1 off a cluster)."""
        return CLUSTER_SHARDS if self.cluster else 1

    def shard(self, name: str) -> int:
        """The index shard of a group or a node id."""
        return shard_of(name, self.shards) if self.cluster else 0

    def _tag(self, name: str) -> str:
        """``{tag}`` a group's or node's names start their own part with, on a cluster."""
        return "{" + shard_tags(CLUSTER_SHARDS)[self.shard(name)] + "}"

    # -- a group: its channel, its members, and the room index that lists it ------------

    def group_channel(self, group: str) -> str:
        """Pub/sub channel a group's messages are published on."""
        if self.cluster:
            return f"{self.prefix}:group:{self._tag(group)}{group}"
        return f"{self.prefix}:group:{group}"

    def group_of(self, pubsub_channel: bytes) -> str | None:
        """The group a pub/sub channel named by :meth:`group_channel` is for, else None."""
        start = f"{self.prefix}:group:".encode()
        if not pubsub_channel.startswith(start):
            return None
        rest = pubsub_channel[len(start) :]
        if self.cluster:
            rest = rest.partition(b"}")[2]
        return rest.decode()

    def durable(self, channel: str) -> str:
        """Stream of a durable worker channel, read by one consumer group."""
        return f"{self.prefix}:durable:{{{channel}}}"

    def members(self, group: str) -> str:
        """Sorted set of a group's members (channel -> join time)."""
        if self.cluster:
            return f"{self.prefix}:members:{self._tag(group)}{group}"
        return f"{self.prefix}:members:{{{group}}}"

    def member_nodes(self, group: str) -> str:
        """Hash of the nodes holding a group's members: node id -> how many."""
        return f"{self.members(group)}:nodes"

    def history(self, group: str) -> str:
        """Stream of a history group's messages; entry ids are ``0-<offset>``."""
        if self.cluster:
            return f"{self.prefix}:history:{self._tag(group)}{group}"
        return f"{self.prefix}:history:{{{group}}}"

    def history_meta(self, group: str) -> str:
        """Hash of a history group's ``epoch`` and ``top`` (its latest offset)."""
        return f"{self.history(group)}:meta"

    def member_nodes_parts(self, shard: int) -> tuple[str, str]:
        """What goes before and after a group's name in :meth:`member_nodes`, for the
        groups of one shard (for scripts that read them for each name of an index)."""
        if self.cluster:
            return f"{self.prefix}:members:{{{shard_tags(CLUSTER_SHARDS)[shard]}}}", ":nodes"
        return f"{self.prefix}:members:{{", "}:nodes"

    def rooms_by_name(self, shard: int = 0) -> str:
        """Index shard of the groups with members, all scored 0 so it sorts by name."""
        if self.cluster:
            return f"{self.prefix}:rooms:{{{shard_tags(CLUSTER_SHARDS)[shard]}}}:by-name"
        return f"{self.prefix}:{{rooms}}:by-name"

    def rooms_by_size(self, shard: int = 0) -> str:
        """Index shard of the groups with members, scored by member count."""
        if self.cluster:
            return f"{self.prefix}:rooms:{{{shard_tags(CLUSTER_SHARDS)[shard]}}}:by-size"
        return f"{self.prefix}:{{rooms}}:by-size"

    def rooms_of(self, group: str) -> tuple[str, str]:
        """The index shard listing ``group``: (by size, by name)."""
        shard = self.shard(group)
        return self.rooms_by_size(shard), self.rooms_by_name(shard)

    # -- a node: its channel, its records, its channels' credit, the node index -----------

    def node_channel(self, node_id: str) -> str:
        """Pub/sub channel carrying messages for one node's process-specific channels."""
        if self.cluster:
            return f"{self.prefix}:node:{self._tag(node_id)}{node_id}"
        return f"{self.prefix}:node:{node_id}"

    def credit(self, channel: str) -> str:
        """How many more sends a process-specific channel near its capacity takes: set by
        its owning node, taken by senders on other nodes (absent: plenty of room)."""
        owner = node_of(channel)
        if self.cluster and owner is not None:
            return f"{self.prefix}:credit:{self._tag(owner)}{channel}"
        return f"{self.prefix}:credit:{{{channel}}}"

    def nodes(self, shard: int = 0) -> str:
        """Index shard of node ids scored by their last heartbeat."""
        if self.cluster:
            return f"{self.prefix}:nodes:{{{shard_tags(CLUSTER_SHARDS)[shard]}}}"
        return f"{self.prefix}:nodes"

    def nodes_of(self, node_id: str) -> str:
        """The node index shard listing ``node_id``."""
        return self.nodes(self.shard(node_id))

    def node(self, node_id: str) -> str:
        """Hash describing one node (host, pid, heartbeat...); expires with the TTL."""
        if self.cluster:
            return f"{self.prefix}:node:{self._tag(node_id)}{node_id}"
        return f"{self.prefix}:node:{{{node_id}}}"

    def node_parts(self, shard: int) -> tuple[str, str]:
        """What goes before and after a node id in :meth:`node`, for one shard's nodes."""
        if self.cluster:
            return f"{self.prefix}:node:{{{shard_tags(CLUSTER_SHARDS)[shard]}}}", ""
        return f"{self.prefix}:node:{{", "}"

    def node_records(self, node_id: str) -> str:
        """Hash of a node's channels: channel -> its record, ``<opened>`` then
        ``|<group> <joined>`` per group (see ``scripts._REGISTRY_OPS``)."""
        return f"{self.node(node_id)}:records"

    def node_records_staging(self, node_id: str) -> str:
        """Where a re-assert builds a node's channel records before they replace the old ones."""
        return f"{self.node(node_id)}:records:next"

    def node_metadata(self, node_id: str) -> str:
        """Hash of the metadata of a node's channels: channel -> metadata JSON."""
        return f"{self.node(node_id)}:meta"

    def node_metadata_staging(self, node_id: str) -> str:
        """Where a re-assert builds a node's metadata before it replaces the old one."""
        return f"{self.node(node_id)}:meta:next"

    # -- a normal channel ----------------------------------------------------------------

    def queue(self, channel: str) -> str:
        """List holding a normal (non ``!``) channel's messages."""
        return f"{self.prefix}:queue:{{{channel}}}"

    def patterns(self) -> tuple[str, ...]:
        """Globs matching every key the layer stores under this prefix, and no other's.

        For ``flush`` and the ACL user. ``conf`` refuses prefixes with ``:`` or glob
        characters, so ``<prefix>:`` is never the start of another prefix's keys
        (``site`` vs ``site2``, ``a`` vs ``a:b``) and needs no escaping.
        """
        prefix = self.prefix
        rooms, nodes = (f"{prefix}:rooms:*", f"{prefix}:nodes:*") if self.cluster else (
            f"{prefix}:{{rooms}}:*", f"{prefix}:nodes")  # fmt: skip
        return (
            f"{prefix}:queue:*",
            f"{prefix}:credit:*",
            f"{prefix}:history:*",
            f"{prefix}:durable:*",
            f"{prefix}:members:*",
            rooms,
            nodes,
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
