"""The cross-node room registry: its records in Redis and every query over them.

Answers come from Redis directly (no asking the nodes). Each query is a plan of
script calls (most are one call; on a cluster, those over every shard or node read
them in one step and merge) run by :class:`Registry` on the layer's event loop, or by
:class:`SyncRegistry` with redis-py's synchronous client from views, admin pages and
management commands. The registry lives on the first configured host, or across a
cluster's masters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from ._aliases import configured, not_ours
from ._node.loops import LoopNodes
from ._protocol import scripts
from ._protocol.globs import Glob, compile_glob
from ._protocol.keys import Keys, node_of
from ._protocol.records import RecordCalls, parse_record
from ._protocol.records import text as _text
from ._protocol.scripts import Call, Plan
from ._protocol.validation import require_valid_channel_name, require_valid_group_name
from ._redis.errors import redis_errors, sync_redis_errors
from ._redis.host import SyncHost
from ._redis.singleflight import SingleFlight
from .conf import LayerConfig

__all__ = [
    "ChannelInfo",
    "Member",
    "NodeInfo",
    "Registry",
    "Room",
    "RoomPage",
    "SyncRegistry",
    "get_registry",
]

T = TypeVar("T")
Order = Literal["name", "size"]
#: How many room names one listing call may examine while filtering by a pattern.
SCAN_BUDGET = 20_000
#: How many glob-matcher steps one listing call may spend (one step: one character of a
#: name against one token of the glob); bounds the time a search holds Redis.
MATCH_STEP_BUDGET = 200_000
MAX_PAGE = 1000
#: The largest ``offset`` of :meth:`Registry.rooms` (beyond any real index).
MAX_OFFSET = 2**31 - 1
#: On a cluster, the largest ``offset + limit`` of :meth:`Registry.rooms`: each of the
#: index shards reads that many names, and the pages are merged.
MAX_CLUSTER_WINDOW = 10_000


@dataclass(frozen=True, slots=True)
class Room:
    """A group with members: how many, and on how many nodes."""

    name: str
    size: int
    nodes: int = 0


@dataclass(frozen=True, slots=True)
class RoomPage:
    """One page of rooms; pass ``next_offset`` back to get the next one (None: no more)."""

    rooms: tuple[Room, ...]
    total: int
    next_offset: int | None


@dataclass(frozen=True, slots=True)
class Member:
    """One membership: a channel in a group, its node, when it joined, its metadata."""

    channel: str
    node: str | None
    joined: datetime
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A channel as the registry knows it: its node, groups (with join times), metadata."""

    channel: str
    node: str | None
    opened: datetime | None
    groups: dict[str, datetime]
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A live node's record, refreshed by its heartbeat."""

    id: str
    host: str
    pid: int
    started: datetime
    heartbeat: datetime
    channels: int
    prefix: str


def _time(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value), tz=UTC)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _record(channel: str, node: str | None, raw: Any, metadata: Any) -> ChannelInfo:
    """A channel's record and its metadata JSON (either may be empty) as a ChannelInfo."""
    opened, groups = parse_record(raw) if raw else ("", {})
    return ChannelInfo(
        channel=channel,
        node=node,
        opened=_time(opened) if opened else None,
        groups={group: _time(joined) for group, joined in groups.items()},
        metadata=json.loads(metadata) if metadata else {},
    )


_new_member = object.__new__
_set_channel, _set_node, _set_joined, _set_metadata = (
    Member.__dict__[name].__set__ for name in ("channel", "node", "joined", "metadata")
)


def _member(channel: str, node: str | None, joined: datetime, metadata: dict[str, Any]) -> Member:
    """``Member(...)`` at half the cost: sets the slots directly instead of through the
    frozen dataclass's ``__init__`` (10,000 members are a listing's main Python cost)."""
    member: Member = _new_member(Member)
    _set_channel(member, channel)
    _set_node(member, node)
    _set_joined(member, joined)
    _set_metadata(member, metadata)
    return member


class RegistryCalls:
    """Builds every registry read as a :data:`~._protocol.scripts.Plan` (no I/O here).

    Most are one call; on a cluster the ones that span groups or nodes read each index
    shard, or each node's slot, in one step and merge in Python. The writes, made by the
    nodes, are built in ``_protocol/records.py``.
    """

    def __init__(self, config: LayerConfig) -> None:
        self.config = config
        self.keys = Keys(config.prefix, config.cluster)
        self._records = RecordCalls(self.keys, config.node_ttl)

    def rooms(
        self, pattern: str | None = None, order: Order = "name", offset: int = 0, limit: int = 50
    ) -> Plan[RoomPage]:
        if order not in ("name", "size"):
            raise ValueError(f"order must be 'name' or 'size', got {order!r}")
        if not (
            _is_int(limit)
            and _is_int(offset)
            and 0 < limit <= MAX_PAGE
            and 0 <= offset <= MAX_OFFSET
        ):
            raise ValueError(f"limit must be 1..{MAX_PAGE} and offset 0..{MAX_OFFSET}")
        shards = self.keys.shards
        if shards > 1 and offset + limit > MAX_CLUSTER_WINDOW:
            raise ValueError(f"on a cluster, offset + limit must be at most {MAX_CLUSTER_WINDOW}")
        glob = compile_glob(pattern) if pattern else None
        return self._rooms(order, offset, limit, glob)

    def _rooms(
        self, order: Order, offset: int, limit: int, glob: Glob | None
    ) -> Generator[list[Call[Any]], list[Any], RoomPage]:
        tokens = () if glob is None or glob.matches_everything else glob.tokens
        literal = glob.prefix if tokens and glob else ""
        # Every name starting with `literal` sorts before this string (names are ASCII).
        literal_end = literal[:-1] + chr(ord(literal[-1]) + 1) if literal else ""
        shards = self.keys.shards
        # One shard reads the page itself; several each read their first offset + limit.
        start, count = (offset, limit) if shards == 1 else (0, offset + limit)
        reads = [
            Call(scripts.ROOMS, [self.keys.rooms_by_name(shard), self.keys.rooms_by_size(shard)],
                 [order, start, count, SCAN_BUDGET, MATCH_STEP_BUDGET,
                  *self.keys.member_nodes_parts(shard), literal, literal_end, *tokens],
                 _room_page)
            for shard in range(shards)
        ]  # fmt: skip
        # Dead nodes' members are not counted. Looking for them goes in the same round trip
        # as the page; only when some are found are they reaped and the page read again.
        find = self._records.find_dead()
        replies = yield [*find, *reads]
        dead = [node_id for found in replies[: len(find)] for node_id in found]
        pages: list[RoomPage] = replies[len(find) :]
        if dead:
            yield from self._records.reap(dead)
            pages = yield reads
        if shards == 1:
            return pages[0]
        rooms = sorted((room for page in pages for room in page.rooms), key=lambda r: r.name,
                       reverse=order == "size")  # fmt: skip
        if order == "size":  # as ZREVRANGE: larger first, then names in reverse order
            rooms.sort(key=lambda room: -room.size)
        more = len(rooms) > offset + limit or any(page.next_offset is not None for page in pages)
        return RoomPage(tuple(rooms[offset : offset + limit]),
                        sum(page.total for page in pages),
                        offset + limit if more else None)  # fmt: skip

    def room_size(self, group: str) -> Plan[int]:
        require_valid_group_name(group)
        return _one(Call(scripts.ROOM_SIZE, [self.keys.members(group)],
                         [self.config.group_expiry], int))  # fmt: skip

    def room(self, group: str) -> Plan[Room]:
        require_valid_group_name(group)
        return _one(Call(
            scripts.ROOM, [self.keys.members(group), self.keys.member_nodes(group)],
            [self.config.group_expiry], lambda reply: Room(group, int(reply[0]), int(reply[1])),
        ))  # fmt: skip

    def members_per_node(self, group: str) -> Plan[dict[str, int]]:
        require_valid_group_name(group)
        return self._members_per_node(group)

    def _members_per_node(
        self, group: str
    ) -> Generator[list[Call[Any]], list[Any], dict[str, int]]:
        [counts] = yield [Call(scripts.HGETALL, [self.keys.member_nodes(group)], [], _pairs)]
        alive = yield from self._alive(list(counts))
        return {node: int(count) for node, count in counts.items() if node in alive}

    def _alive(self, node_ids: list[str]) -> Generator[list[Call[Any]], list[Any], set[str]]:
        """Which of ``node_ids`` are alive: one ALIVE call per node index shard."""
        by_shard: dict[int, list[str]] = {}
        for node_id in node_ids:
            by_shard.setdefault(self.keys.shard(node_id), []).append(node_id)
        if not by_shard:
            return set()
        replies = yield [Call(scripts.ALIVE, [self.keys.nodes(shard)],
                              [self.config.node_ttl, *ids], list)
                         for shard, ids in by_shard.items()]  # fmt: skip
        return {node_id for ids, flags in zip(by_shard.values(), replies, strict=True)
                for node_id, flag in zip(ids, flags, strict=True) if int(flag)}  # fmt: skip

    def members(self, group: str, offset: int = 0, limit: int | None = None) -> Plan[list[Member]]:
        require_valid_group_name(group)
        if not (_is_int(offset) and 0 <= offset <= MAX_OFFSET) or (
            limit is not None and not (_is_int(limit) and 1 <= limit <= MAX_OFFSET)
        ):
            raise ValueError(f"offset must be 0..{MAX_OFFSET} and limit 1..{MAX_OFFSET}")
        return self._members(group, offset, -1 if limit is None else limit)

    def _members(
        self, group: str, offset: int, limit: int
    ) -> Generator[list[Call[Any]], list[Any], list[Member]]:
        keys, config = self.keys, self.config
        [entries] = yield [Call(scripts.MEMBER_ENTRIES, [keys.members(group)],
                                [config.group_expiry, offset, limit], list)]  # fmt: skip
        channels = [channel.decode() for channel in entries[0::2]]
        owners = list(map(node_of, channels))
        by_node: dict[str, list[str]] = {}
        for channel, node in zip(channels, owners, strict=True):
            if node is not None:
                by_node.setdefault(node, []).append(channel)
        dead: set[str] = set()
        metadata: dict[str, bytes | None] = {}
        if by_node:
            replies = yield [Call(scripts.NODE_MEMBERS,
                                  [keys.nodes_of(node), keys.node_metadata(node)],
                                  [config.node_ttl, node, "\n".join(names)], list)
                             for node, names in by_node.items()]  # fmt: skip
            for (node, names), reply in zip(by_node.items(), replies, strict=True):
                if not reply:
                    dead.add(node)
                elif len(reply) > 1:
                    metadata.update(zip(names, reply[1:], strict=True))
        joined = (datetime.fromtimestamp(float(us) / 1e6, UTC) for us in entries[1::2])
        members = []
        get = metadata.get
        for channel, node, when in zip(channels, owners, joined, strict=True):
            if node in dead:
                continue
            data = get(channel)
            members.append(_member(channel, node, when, json.loads(data) if data else {}))
        return members

    def channel(self, channel: str) -> Plan[ChannelInfo | None]:
        """A process-specific channel's record (None when the registry does not know it)."""
        require_valid_channel_name(channel)
        node = node_of(channel)
        if node is None:
            raise ValueError(f"{channel!r} is a normal channel; only process-specific ones "
                             "have a record")  # fmt: skip

        def parse(reply: list[Any]) -> ChannelInfo | None:
            if not reply[1]:
                return None
            info = _record(channel, node, reply[1], reply[2])
            cutoff = float(reply[0]) - self.config.group_expiry
            live = {g: t for g, t in info.groups.items() if t.timestamp() > cutoff}
            return ChannelInfo(channel, node, info.opened, live, info.metadata)

        keys = [self.keys.node_records(node), self.keys.node_metadata(node)]
        return _one(Call(scripts.CHANNEL, keys, [channel], parse))

    def nodes(self) -> Plan[list[NodeInfo]]:
        def parse(reply: list[Any]) -> list[NodeInfo]:
            nodes = []
            for flat in reply:
                data = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
                nodes.append(
                    NodeInfo(
                        id=data["id"],
                        host=data["host"],
                        pid=int(data["pid"]),
                        started=_time(data["started"]),
                        heartbeat=_time(data["heartbeat"]),
                        channels=int(data["channels"]),
                        prefix=data["prefix"],
                    )
                )
            return nodes

        return self._nodes(parse)

    def _nodes(
        self, parse: Callable[[list[Any]], list[NodeInfo]]
    ) -> Generator[list[Call[Any]], list[Any], list[NodeInfo]]:
        keys = self.keys
        shards = yield [Call(scripts.NODES, [keys.nodes(shard)],
                             [self.config.node_ttl, *keys.node_parts(shard)], parse)
                        for shard in range(keys.shards)]  # fmt: skip
        return sorted((node for shard in shards for node in shard), key=lambda node: node.started)

    def node_channels(self, node_id: str) -> Plan[list[ChannelInfo]]:
        return self._node_channels(node_id)

    def _node_channels(
        self, node_id: str
    ) -> Generator[list[Call[Any]], list[Any], list[ChannelInfo]]:
        keys = self.keys
        records, metadata = yield [
            Call(scripts.HGETALL, [keys.node_records(node_id)], [], _pairs),
            Call(scripts.HGETALL, [keys.node_metadata(node_id)], [], _pairs),
        ]
        channels = [_record(channel, node_id, raw, metadata.get(channel))
                    for channel, raw in records.items()]  # fmt: skip
        return sorted(channels, key=lambda info: info.channel)


def _one(call: Call[T]) -> Generator[list[Call[Any]], list[Any], T]:
    """A plan of one call."""
    [result] = yield [call]
    return result


def _room_page(reply: list[Any]) -> RoomPage:
    flat = reply[2:]
    rooms = tuple(
        Room(_text(flat[i]), int(float(flat[i + 1])), int(flat[i + 2]))
        for i in range(0, len(flat), 3)
    )
    next_offset = int(reply[1])
    return RoomPage(rooms, int(reply[0]), None if next_offset < 0 else next_offset)


def _flat_pairs(reply: list[Any]) -> list[tuple[str, Any]]:
    return [(_text(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2)]


def _pairs(reply: list[Any]) -> dict[str, Any]:
    return dict(_flat_pairs(reply))


class Registry:
    """Registry queries for async code, on the layer's own connections.

    Get it from ``layer.registry``. Every method is one or two Redis round trips
    (``rooms()`` more when it finds dead nodes to reap; docs/registry.md), shared by
    identical concurrent calls on the same event loop (single-flight, see
    docs/registry.md): callers of one flight get equal results, and the result
    objects inside them (``Member``, ``ChannelInfo`` and their dicts) are shared, so
    treat them as read-only.
    """

    def __init__(self, config: LayerConfig, nodes: LoopNodes) -> None:
        self._nodes = nodes
        self.calls = RegistryCalls(config)
        self._flights = SingleFlight()

    async def _query(self, plan: Plan[T]) -> T:
        async with redis_errors:
            return await self._nodes.current().registry.host.run_plan(plan)

    async def _run(self, key: tuple[Any, ...], plan: Callable[[], Plan[T]]) -> T:
        result = await self._flights.run(key, lambda: self._query(plan()))
        if isinstance(result, list):  # each caller may sort or extend its own list
            return list(result)  # type: ignore[return-value]
        return result

    async def rooms(
        self, pattern: str | None = None, order: Order = "name", offset: int = 0, limit: int = 50
    ) -> RoomPage:
        """One page of groups with their sizes, sorted by name or size, filtered by a glob.

        Dead nodes are looked for in the same round trip, and when there are any they are
        reaped and the page is read again, so their members are not counted.
        Raises :class:`~broadcast_layer.exceptions.InvalidPattern` for a malformed glob
        and ``ValueError`` for a bad order, limit or offset, before any I/O.
        """
        return await self._run(
            ("rooms", pattern, order, offset, limit),
            lambda: self.calls.rooms(pattern, order, offset, limit),
        )

    async def room_size(self, group: str) -> int:
        """How many unexpired members a group has (one ZCOUNT)."""
        return await self._run(
            (
                "room_size",
                group,
            ),
            lambda: self.calls.room_size(group),
        )

    async def room(self, group: str) -> Room:
        """One group's size and the number of nodes holding its members (one call)."""
        return await self._run(
            (
                "room",
                group,
            ),
            lambda: self.calls.room(group),
        )

    async def members_per_node(self, group: str) -> dict[str, int]:
        """How many of the group's members each live node holds: node id -> count.

        One call, O(nodes holding members); read from the counters ``JOIN``/``LEAVE``
        keep (like ``room().nodes``), so a membership past ``group_expiry`` counts until
        its node removes it. Dead nodes are left out as soon as their heartbeat is
        older than ``node_ttl``, before they are reaped. For a presence list: the sum is
        the room's size, and a node's share can be dropped when that node dies.
        """
        return await self._run(
            (
                "members_per_node",
                group,
            ),
            lambda: self.calls.members_per_node(group),
        )

    async def members(self, group: str, offset: int = 0, limit: int | None = None) -> list[Member]:
        """The group's members on live nodes, in join order, with node, join time, metadata.

        ``offset``/``limit`` page through a large group.
        """
        return await self._run(
            ("members", group, offset, limit), lambda: self.calls.members(group, offset, limit)
        )

    async def groups_of(self, channel: str) -> dict[str, datetime]:
        """The groups a process-specific channel is in, with join times."""
        info = await self._run(("channel", channel), lambda: self.calls.channel(channel))
        return dict(info.groups) if info else {}

    async def channel(self, channel: str) -> ChannelInfo | None:
        """Everything the registry knows about one process-specific channel."""
        return await self._run(
            (
                "channel",
                channel,
            ),
            lambda: self.calls.channel(channel),
        )

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes, oldest first."""
        return await self._run(("nodes",), lambda: self.calls.nodes())

    async def node_channels(self, node_id: str) -> list[ChannelInfo]:
        """The channels a node holds, with their groups and metadata."""
        return await self._run(
            (
                "node_channels",
                node_id,
            ),
            lambda: self.calls.node_channels(node_id),
        )


class SyncRegistry:
    """The same queries without an event loop, for views, admin and commands.

    Uses redis-py's synchronous client (thread-safe, connections reused); build it
    with :func:`get_registry`.
    """

    def __init__(self, config: LayerConfig) -> None:
        self.calls = RegistryCalls(config)
        self._host = SyncHost(config.hosts if config.cluster else config.hosts[0],
                              config.pool_limits)  # fmt: skip

    def _run(self, plan: Plan[T]) -> T:
        with sync_redis_errors():
            return self._host.run_plan(plan)

    def rooms(
        self, pattern: str | None = None, order: Order = "name", offset: int = 0, limit: int = 50
    ) -> RoomPage:
        """See :meth:`Registry.rooms`."""
        return self._run(self.calls.rooms(pattern, order, offset, limit))

    def room_size(self, group: str) -> int:
        """See :meth:`Registry.room_size`."""
        return self._run(self.calls.room_size(group))

    def room(self, group: str) -> Room:
        """See :meth:`Registry.room`."""
        return self._run(self.calls.room(group))

    def members_per_node(self, group: str) -> dict[str, int]:
        """See :meth:`Registry.members_per_node`."""
        return self._run(self.calls.members_per_node(group))

    def members(self, group: str, offset: int = 0, limit: int | None = None) -> list[Member]:
        """See :meth:`Registry.members`."""
        return self._run(self.calls.members(group, offset, limit))

    def groups_of(self, channel: str) -> dict[str, datetime]:
        """See :meth:`Registry.groups_of`."""
        info = self._run(self.calls.channel(channel))
        return info.groups if info else {}

    def channel(self, channel: str) -> ChannelInfo | None:
        """See :meth:`Registry.channel`."""
        return self._run(self.calls.channel(channel))

    def nodes(self) -> list[NodeInfo]:
        """See :meth:`Registry.nodes`."""
        return self._run(self.calls.nodes())

    def node_channels(self, node_id: str) -> list[ChannelInfo]:
        """See :meth:`Registry.node_channels`."""
        return self._run(self.calls.node_channels(node_id))

    def close(self) -> None:
        """Close the client's connections."""
        self._host.close()


def get_registry(alias: str = "default") -> SyncRegistry:
    """A :class:`SyncRegistry` for ``CHANNEL_LAYERS[alias]`` (one per layer, reused).

    Raises ``ValueError`` when the alias is missing or is not a BroadcastChannelLayer.
    """
    layer = configured(alias)
    registry = getattr(layer, "sync_registry", None)
    if not isinstance(registry, SyncRegistry):
        raise not_ours(alias, layer)
    return registry
