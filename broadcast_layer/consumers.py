"""Optional consumer mixins built on the layer's public API."""

from __future__ import annotations

import json
from typing import Any

from channels.consumer import get_handler_name

from .emitter import all_group, user_group


class NoPerMessageDatabaseCleanupMixin:
    """Skip Channels' per-message ``close_old_connections()`` hop to a worker thread.

    Since Channels 4.2, ``AsyncConsumer.dispatch`` runs Django's
    ``close_old_connections()`` in the database thread before every handler: one thread
    pool round trip per WebSocket frame and per channel-layer message. In a profile of
    a Daphne node serving 1,000 chat clients it was 23% of the node's CPU, against 5%
    for the whole channel layer (docs/performance.md, "Where a node's CPU goes").

    Mix it in (before the consumer class in the bases) when the consumer's handlers do
    not use the ORM, or use it only through ``database_sync_to_async``, which closes
    old connections itself before and after each call. Django's async ORM methods
    (``aget()``, ``acreate()``...) do not: a consumer that uses them should keep the
    default.
    """

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Call the message's handler directly; an unknown type raises ``ValueError``."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)


class RemoteControlMixin:
    """Mix into an ``AsyncWebsocketConsumer`` (before it in the bases).

    - on connect the channel joins ``ALL_GROUP`` and, for a logged-in user, that
      user's ``USER_GROUP``, so the emitter's ``all()`` and ``user()`` reach it;
    - ``broadcast.message`` (the emitter's and ``manage.py broadcast``'s default type)
      is forwarded to the client as a JSON text frame;
    - ``broadcast.disconnect`` (sent by ``layer.disconnect(channel)`` from any process,
      e.g. the admin) closes the WebSocket;
    - on disconnect the channel leaves every group it is in, as the registry records
      them, not only those listed in ``groups``;
    - :meth:`set_metadata` attaches e.g. a user id and display name to the channel,
      shown by the registry with each membership.
    """

    channel_layer: Any
    channel_name: str
    scope: dict[str, Any]

    def broadcast_groups(self) -> list[str]:
        """The groups joined on connect: everyone's, and the user's when logged in."""
        groups = [all_group()]
        user = self.scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            groups.append(user_group(user.pk))
        return groups

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        if self.channel_layer is not None:
            for group in self.broadcast_groups():
                await self.channel_layer.group_add(group, self.channel_name)
        await super().websocket_connect(message)  # type: ignore[misc]

    async def broadcast_message(self, event: dict[str, Any]) -> None:
        """Handle ``broadcast.message``: forward it to the client as JSON."""
        await self.send(text_data=json.dumps(event))  # type: ignore[attr-defined]

    async def broadcast_disconnect(self, event: dict[str, Any]) -> None:
        """Handle ``broadcast.disconnect``: close the connection (code 4000 by default)."""
        await self.close(code=event.get("code", 4000))  # type: ignore[attr-defined]

    async def set_metadata(self, **metadata: Any) -> None:
        """Attach JSON-serializable metadata to this channel in the registry."""
        await self.channel_layer.set_channel_metadata(self.channel_name, metadata)

    async def leave_all_groups(self) -> None:
        """Leave every group the registry says this channel is in."""
        for group in await self.channel_layer.registry.groups_of(self.channel_name):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        try:
            if self.channel_layer is not None:
                await self.leave_all_groups()
        finally:  # even with Redis down, the consumer must still stop
            await super().websocket_disconnect(message)  # type: ignore[misc]
