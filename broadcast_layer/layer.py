"""The Channels channel layer: validates input, then hands work to the current loop's node.

``BroadcastChannelLayer`` faces Channels; the node's parts (``broadcast_layer._node``) face Redis.
One layer instance serves every event loop in the process (Daphne's, the fresh ones
``async_to_sync`` makes); each loop gets its own node, closed with its loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer
from channels_redis.serializers import SerializerDoesNotExist
from channels_redis.serializers import registry as serializers

from . import _metrics
from ._aliases import configured, not_ours
from ._node.health import Health
from ._node.history import history_decoder
from ._node.loops import LoopNodes
from ._node.node import Node, NodeStats
from ._protocol.history import (
    HISTORY_KEY,
    HistoryCalls,
    HistoryMessage,
    HistoryPage,
    HistoryPolicy,
    build_page,
    check_query,
)
from ._protocol.keys import Keys, shard_index
from ._protocol.validation import (
    MAX_NESTING,
    require_shallow,
    require_valid_channel_name,
    require_valid_channel_prefix,
    require_valid_group_name,
)
from ._redis.errors import OUTAGE, redis_errors, unavailable
from ._redis.host import SyncHost
from .conf import DEFAULT_MAX_MESSAGE_SIZE, OPTIONS, LayerConfig, build_config
from .exceptions import (
    ConfigurationError,
    HistoryNotEnabled,
    InvalidMessage,
    MessageTooDeep,
    MessageTooLarge,
)
from .registry import Registry, SyncRegistry

__all__ = [
    "BroadcastChannelLayer",
    "Health",
    "HistoryMessage",
    "HistoryPage",
    "NodeStats",
    "get_layer",
]


class BroadcastChannelLayer(BaseChannelLayer):
    """A Redis channel layer with ref-counted group subscriptions.

    ``CONFIG`` takes channels_redis's keys with the same meaning, plus the ones
    documented in docs/configuration.md; an unknown key is a ``TypeError`` that
    names it. The keyword arguments are the options declared in
    :mod:`broadcast_layer.conf` (names, defaults, annotations: a test holds them equal).
    """

    extensions = ["groups", "flush"]

    def __init__(
        self,
        hosts: Sequence[Any] | None = None,
        cluster: bool = False,
        prefix: str = "asgi",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[Any, int] | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        serializer_format: str = "msgpack",
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        subscribe_timeout: float = 10.0,
        heartbeat_interval: float = 5.0,
        node_ttl: float = 15.0,
        failover_timeout: float = 10.0,
        max_connections: int = 100,
        pool_timeout: float = 5.0,
        history: Mapping[str, Mapping[str, float]] | None = None,
        durable_channels: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        arguments = locals()  # exactly the declared options (a test holds them equal)
        self.config: LayerConfig = build_config({name: arguments[name] for name in OPTIONS})
        super().__init__(expiry=expiry, capacity=capacity)
        self.channel_capacity = list(self.config.channel_capacity)  # what get_capacity() reads
        self.group_expiry = group_expiry
        self.prefix = prefix
        try:
            self.serializer = serializers.get_serializer(
                serializer_format,
                symmetric_encryption_keys=self.config.symmetric_encryption_keys,
                expiry=expiry,
            )
        except SerializerDoesNotExist:
            raise ConfigurationError(
                f"CONFIG['serializer_format']: unknown format {serializer_format!r}"
            ) from None
        self.nodes = LoopNodes(lambda: Node(self.config, self.serializer))
        """This layer's node on each event loop (internal: the layer's methods use it)."""
        self._sync_registry: SyncRegistry | None = None
        self.registry = Registry(self.config, self.nodes)
        """Async registry queries: ``await layer.registry.members("room42")``."""

    # -- per-loop nodes ----------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """The id of the current event loop's node (part of its channel names)."""
        return self.nodes.current().id

    def stats(self) -> NodeStats:
        """A snapshot of the current loop's node: channels, groups, drops, reconnects,
        re-asserts, history catch-ups (docs/operations.md)."""
        return self.nodes.current().stats()

    def local_members(self, group: str) -> frozenset[str]:
        """The channels of the current loop's node that are in ``group`` (no I/O)."""
        return frozenset(self.nodes.current().subscriptions.members(group))

    # -- Channels API ------------------------------------------------------------------

    # Channels' own checks use match() with "$", which accepts "room\n"; every entry
    # point of this package uses the full-match rules in broadcast_layer._protocol.validation.
    def require_valid_group_name(self, name: str) -> bool:
        """Raise :class:`~broadcast_layer.exceptions.InvalidName` (a ``TypeError``) if invalid."""
        require_valid_group_name(name)
        return True

    def require_valid_channel_name(self, name: str, receive: bool = False) -> bool:
        """Raise :class:`~broadcast_layer.exceptions.InvalidName` (a ``TypeError``) if invalid."""
        require_valid_channel_name(name, receive)
        return True

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send a message to a channel.

        Raises ``TypeError`` for an invalid name or message, ``ChannelFull`` when the
        channel is at capacity, ``MessageTooLarge``, and ``RedisUnavailable``.
        """
        self.require_valid_channel_name(channel)
        data = self.encode(message)
        async with redis_errors:
            if self.config.durable_for(channel) is not None:
                await self.nodes.current().durable.send(channel, data)
            else:
                await self.nodes.current().channels.send(channel, data)
        _metrics.recorder.published("channel")

    async def receive(self, channel: str) -> dict[str, Any]:
        """Wait for and return the next message on a channel.

        A process-specific channel can only be received on the loop that created it.
        On a durable channel (``CONFIG["durable_channels"]``) it first acknowledges the
        message this loop's node received before; one that is never acknowledged is
        delivered again, to any receiver, after ``claim_after`` seconds.
        """
        channels = self.nodes.current().channels
        mailbox = channels.mailboxes.get(channel)
        if mailbox is not None:  # local: valid by construction, and no Redis I/O
            message = channels.take(mailbox)  # no await when one is already queued
            return message if message is not None else await channels.wait_for(mailbox)
        self.require_valid_channel_name(channel)
        durable = self.config.durable_for(channel)
        async with redis_errors:
            if durable is not None:  # acknowledges this node's previous message first
                return await self.nodes.current().durable.receive(channel, durable)
            return await channels.receive(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        """Create a process-specific channel owned by this loop's node and return its name."""
        require_valid_channel_prefix(prefix)
        async with redis_errors:
            return await self.nodes.current().channels.new_channel(prefix)

    async def group_add(self, group: str, channel: str) -> None:
        """Add a channel to a group.

        For a channel of this loop's node it returns once Redis has confirmed the
        node's subscription, so any ``group_send`` issued afterwards reaches it.
        """
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        try:  # as redis_errors, without an async context manager per call
            await self.nodes.current().groups.add(group, channel)
        except OUTAGE as exc:
            raise unavailable(exc) from exc

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove a channel from a group (a no-op when it is not a member)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        try:  # as redis_errors, without an async context manager per call
            await self.nodes.current().groups.discard(group, channel)
        except OUTAGE as exc:
            raise unavailable(exc) from exc

    async def group_send(self, group: str, message: dict[str, Any]) -> int:
        """Publish a message to a group in one Redis command; never raises ``ChannelFull``.

        Returns the number of nodes that received the publish. For a history group
        (``CONFIG["history"]``) the same script appends it to the group's history, and it
        is delivered with ``message["history"] = {"offset": n, "epoch": e}``; a message
        already holding that key is an ``InvalidMessage``.
        """
        self.require_valid_group_name(group)
        data = self.encode_for_group(group, message)
        async with redis_errors:
            nodes = await self.nodes.current().groups.send(group, data)
        _metrics.recorder.published("group")
        return nodes

    def encode_group(self, message: dict[str, Any]) -> bytes:
        """Serialize a group message: :meth:`encode`, stamped with the send time when
        metrics are on (the receivers' lag histogram; docs/protocol.md)."""
        return self.encode(_metrics.recorder.stamp(message))

    def encode_for_group(self, group: str, message: dict[str, Any]) -> bytes:
        """:meth:`encode_group`, refusing the reserved ``"history"`` key in a history group's
        message."""
        if (
            isinstance(message, dict)
            and HISTORY_KEY in message
            and self.config.history_for(group) is not None
        ):
            raise InvalidMessage(
                f"{group!r} keeps history: the {HISTORY_KEY!r} key of its messages is reserved"
            )
        return self.encode_group(message)

    # -- history -----------------------------------------------------------------------

    def _history_policy(self, group: str, since: int | None, limit: int) -> HistoryPolicy:
        self.require_valid_group_name(group)
        check_query(since, limit)
        policy = self.config.history_for(group)
        if policy is None:
            raise HistoryNotEnabled(f"{group!r} matches no glob of CONFIG['history']")
        return policy

    async def group_history(
        self, group: str, since: int | None = None, epoch: str | None = None, limit: int = 100
    ) -> HistoryPage:
        """Read a history group's kept messages, oldest first (one round trip).

        ``since=None`` gives the latest ``limit`` messages; an offset gives up to
        ``limit`` messages after it. ``page.complete`` is False when what followed
        ``since`` is no longer all kept or ``epoch`` is not the group's current one:
        the caller cannot recover and must start over. Raises ``HistoryNotEnabled``,
        ``InvalidHistoryQuery`` (limit 1 to 1000), ``InvalidName``, ``RedisUnavailable``.
        """
        policy = self._history_policy(group, since, limit)
        async with redis_errors:
            return await self.nodes.current().history.read(group, policy, since, epoch, limit)

    def sync_group_history(
        self, group: str, since: int | None = None, epoch: str | None = None, limit: int = 100
    ) -> HistoryPage:
        """:meth:`group_history` from sync code: no event loop; one connection, closed after."""
        policy = self._history_policy(group, since, limit)
        spec = self.config.hosts[shard_index(group, len(self.config.hosts))]
        call = HistoryCalls(Keys(self.config.prefix)).read(group, policy, since, epoch, limit)
        host = SyncHost(spec, self.config.pool_limits)
        try:
            raw = host.run(call)
        finally:
            host.close()
        return build_page(raw, since, epoch, history_decoder(self.config, self.serializer))

    def encode(self, message: dict[str, Any]) -> bytes:
        """Serialize a message as every node expects it (same for the emitter).

        Raises :class:`~broadcast_layer.exceptions.InvalidMessage` (a ``TypeError``) for a
        non-dict or unserializable message, its subclass ``MessageTooDeep`` when
        containers nest deeper than ``validation.MAX_NESTING`` (32), and
        ``MessageTooLarge`` above ``max_message_size``.
        """
        if not isinstance(message, dict):
            raise InvalidMessage(f"Messages must be dicts, got {type(message).__name__}")
        require_shallow(message)
        try:
            data: bytes = self.serializer.serialize(message)
        except RecursionError:  # a serializer's own hooks recursing; never seen past the walk
            raise MessageTooDeep(f"The message nests deeper than {MAX_NESTING}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidMessage(f"Message cannot be serialized: {exc}") from None
        if len(data) > self.config.max_message_size:
            raise MessageTooLarge(
                f"Message is {len(data)} bytes; max_message_size is {self.config.max_message_size}"
            )
        return data

    # -- registry and remote operations ------------------------------------------------

    @property
    def sync_registry(self) -> SyncRegistry:
        """Registry queries without an event loop (views, admin, commands)."""
        if self._sync_registry is None:
            self._sync_registry = SyncRegistry(self.config)
        return self._sync_registry

    async def set_channel_metadata(self, channel: str, metadata: dict[str, Any]) -> bool:
        """Attach JSON metadata (e.g. user id, display name) to a channel in the registry.

        Shown with the channel in ``registry.members()``; replaced by each call.
        Returns False when the registry does not know the channel (nothing recorded).
        Raises ``TypeError``/``ValueError`` for an invalid channel or metadata (nested
        deeper than ``validation.MAX_NESTING``: ``MessageTooDeep``).
        """
        self.require_valid_channel_name(channel)
        if isinstance(metadata, dict):
            require_shallow(metadata)
        async with redis_errors:
            return await self.nodes.current().registry.set_metadata(channel, metadata)

    async def disconnect(self, channel: str) -> bool:
        """Send ``{"type": "broadcast.disconnect"}`` to a channel, on whichever node owns it.

        ``broadcast_layer.consumers.RemoteControlMixin`` closes the WebSocket on it.
        Returns False when the channel's node is not running.
        """
        self.require_valid_channel_name(channel)
        async with redis_errors:
            return await self.nodes.current().channels.disconnect(channel)

    async def ping(self) -> None:
        """Check every configured Redis host answers; raise ``RedisUnavailable`` if not."""
        async with redis_errors:
            await self.nodes.current().ping()

    async def health(self, timeout: float = 2.0) -> Health:
        """Probe the current loop's node: PUBLISH on its own channel, read it back.

        The probe goes through the node's own pub/sub connection, so ``ok`` proves that
        Redis takes publishes and that the node's read loop delivers them. Never raises
        and never hangs: with Redis down it returns ``ok=False`` within ``timeout``
        seconds (plus a moment), with the reason in ``error``. Raises ``ValueError`` for a
        ``timeout`` that is not a positive number.
        """
        if not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        return await self.nodes.current().health(float(timeout))

    def health_sync(self, timeout: float = 2.0) -> Health:
        """:meth:`health` from synchronous code (through ``async_to_sync``).

        Without a running server loop in the process (WSGI, a command), the probe runs on
        a fresh node with fresh connections: it proves that Redis round-trips pub/sub,
        not that a server's read loop does. Call it from sync code only.
        """
        health: Health = async_to_sync(self.health)(timeout)
        return health

    async def flush(self) -> None:
        """Delete this layer's keys in Redis and reset this loop's node (for tests)."""
        node = self.nodes.detach()
        if node is None:
            node = self.nodes.new_unattached()
        try:
            async with redis_errors:
                await node.flush_keys()
        finally:
            await node.close()

    async def close_pools(self) -> None:
        """Close this loop's command connections; the layer stays usable and reconnects.

        As channels_redis's ``close_pools()``. Channels, groups and pending ``receive()``
        calls carry on: the pub/sub connection of a node with channels or groups stays
        open (closing it would only lose messages until it resubscribed). Idempotent.
        """
        node = self.nodes.existing()
        if node is not None:
            await node.close_pools()

    async def close(self) -> None:
        """Close this loop's node: cancel its tasks and close its connections (idempotent)."""
        node = self.nodes.detach()
        if node is not None:
            await node.close()


def get_layer(alias: str = "default") -> BroadcastChannelLayer:
    """The layer configured as ``CHANNEL_LAYERS[alias]``.

    Raises ``ValueError`` when the alias is missing or is not a BroadcastChannelLayer.
    """
    layer = configured(alias)
    if not isinstance(layer, BroadcastChannelLayer):
        raise not_ours(alias, layer)
    return layer
