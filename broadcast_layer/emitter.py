"""Sending to connected clients from outside a consumer: views, tasks, scripts, cron jobs.

:class:`Emitter` is synchronous (redis-py's sync client, no event loop, connections
reused, thread-safe); :class:`AsyncEmitter` is its async twin on the layer's own
connections. Both serialize exactly as the configured layer does, so what they send is
indistinguishable from ``group_send``. Users and "everyone" are groups whose names come
from the ``BROADCAST_LAYER`` setting (see docs/emitting.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from . import _metrics
from ._protocol import records
from ._protocol.history import HistoryCalls
from ._protocol.keys import Keys, shard_index
from ._redis.errors import redis_errors
from ._redis.host import SyncHost
from .layer import get_layer

__all__ = ["AsyncEmitter", "EmitResult", "Emitter", "all_group", "emitter_settings", "user_group"]

DEFAULTS = {
    "DEFAULT_TYPE": "broadcast.message",
    "USER_GROUP": "user.{user_id}",
    "ALL_GROUP": "broadcast.all",
}


def emitter_settings() -> dict[str, str]:
    """``settings.BROADCAST_LAYER`` merged over the defaults."""
    return {**DEFAULTS, **getattr(settings, "BROADCAST_LAYER", {})}


def user_group(user_id: object) -> str:
    """The group every connection of one user joins (``USER_GROUP`` with the id filled in)."""
    return emitter_settings()["USER_GROUP"].format(user_id=user_id)


def all_group() -> str:
    """The group every connection joins, for messages to everyone."""
    return emitter_settings()["ALL_GROUP"]


@dataclass(frozen=True)
class EmitResult:
    """What one send did: how many nodes got it, how many members the target has."""

    target: str
    nodes: int
    members: int

    def __str__(self) -> str:
        nodes = "node" if self.nodes == 1 else "nodes"
        members = "member" if self.members == 1 else "members"
        return f"{self.target}: published to {self.nodes} {nodes}, {self.members} {members}"


class Emitter:
    """Send from synchronous code without an event loop.

    ``Emitter("default").group("room42", {"type": "chat.message", "text": "hi"})``.
    Raises ``TypeError``/``ValueError`` for bad names or messages, ``MessageTooLarge``,
    ``ChannelFull`` (single channels only) and ``RedisUnavailable``; nothing is sent then,
    unless the connection broke with the publish in flight (docs/reliability.md).
    """

    def __init__(self, alias: str = "default") -> None:
        self.layer = get_layer(alias)
        config = self.layer.config
        self._keys = Keys(config.prefix, config.cluster)
        self._history = HistoryCalls(self._keys)
        specs = [config.hosts] if config.cluster else config.hosts  # a cluster is one host
        self._hosts = [SyncHost(spec, config.pool_limits) for spec in specs]

    def _host(self, name: str) -> SyncHost:
        return self._hosts[shard_index(name, len(self._hosts))]

    def group(self, group: str, message: dict[str, Any]) -> EmitResult:
        """Publish to one group (one PUBLISH) and count its members in the registry.

        A history group's message is appended and published in one script, as
        ``group_send`` does.
        """
        self.layer.require_valid_group_name(group)
        data = self.layer.encode_for_group(group, message)
        policy = self.layer.config.history_for(group)
        if policy is not None:
            nodes = self._host(group).run(self._history.append(group, policy, data)).reached
        else:
            nodes = self._host(group).publish(self._keys.group_channel(group), data)
        _metrics.recorder.published("group")
        members = self.layer.sync_registry.room_size(group)
        return EmitResult(group, nodes, members)

    def groups(self, groups: list[str], message: dict[str, Any]) -> list[EmitResult]:
        """Publish to several groups; every name is checked before anything is sent."""
        for group in groups:
            self.layer.require_valid_group_name(group)
        self.layer.encode(message)
        return [self.group(group, message) for group in groups]

    def user(self, user_id: object, message: dict[str, Any]) -> EmitResult:
        """Send to every connection of one user (their ``USER_GROUP``)."""
        return self.group(user_group(user_id), message)

    def all(self, message: dict[str, Any]) -> EmitResult:
        """Send to every connection that joined ``ALL_GROUP``."""
        return self.group(all_group(), message)

    def channel(self, channel: str, message: dict[str, Any]) -> EmitResult:
        """Send to one channel (``ChannelFull`` when it is at capacity)."""
        self.layer.require_valid_channel_name(channel)
        config = self.layer.config
        name, call = records.channel_send(self._keys, channel, self.layer.encode(message),
                                          config.capacity_for(channel), config.expiry)  # fmt: skip
        reached = self._host(name).run(call)
        _metrics.recorder.published("channel")
        return EmitResult(channel, reached, 1 if reached else 0)

    def close(self) -> None:
        """Close the connections (the emitter is unusable afterwards)."""
        for host in self._hosts:
            host.close()


class AsyncEmitter:
    """The async twin of :class:`Emitter`, on the layer's connections for the running loop."""

    def __init__(self, alias: str = "default") -> None:
        self.layer = get_layer(alias)

    async def group(self, group: str, message: dict[str, Any]) -> EmitResult:
        """See :meth:`Emitter.group`."""
        nodes = await self.layer.group_send(group, message)
        return EmitResult(group, nodes, await self.layer.registry.room_size(group))

    async def groups(self, groups: list[str], message: dict[str, Any]) -> list[EmitResult]:
        """See :meth:`Emitter.groups`."""
        for group in groups:
            self.layer.require_valid_group_name(group)
        self.layer.encode(message)
        return [await self.group(group, message) for group in groups]

    async def user(self, user_id: object, message: dict[str, Any]) -> EmitResult:
        """See :meth:`Emitter.user`."""
        return await self.group(user_group(user_id), message)

    async def all(self, message: dict[str, Any]) -> EmitResult:
        """See :meth:`Emitter.all`."""
        return await self.group(all_group(), message)

    async def channel(self, channel: str, message: dict[str, Any]) -> EmitResult:
        """See :meth:`Emitter.channel`."""
        self.layer.require_valid_channel_name(channel)
        data = self.layer.encode(message)
        async with redis_errors:
            reached = await self.layer.nodes.current().channels.send(channel, data)
        _metrics.recorder.published("channel")
        return EmitResult(channel, reached, 1 if reached else 0)
