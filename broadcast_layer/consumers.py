"""Optional consumer mixins built on the layer's public API."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name

from ._protocol.history import HISTORY_KEY, MAX_HISTORY_LIMIT
from .emitter import all_group, user_group
from .exceptions import HistoryNotEnabled


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


class HistoryRecoveryMixin:
    """Mix into an ``AsyncWebsocketConsumer`` (before it): join history groups, recover gaps.

    On connect, for each group of :meth:`history_groups` it joins the group first, then
    reads the group's history after the client's last ``(offset, epoch)`` and dispatches
    what the client missed to the consumer's own handlers, oldest first, before any live
    message. Live messages it already dispatched (same epoch, offset not above the last
    one) are dropped afterwards, so the client sees every offset once. Then it sends
    ``{"type": "history.recovered", "group", "complete", "epoch", "offset"}``: with
    ``complete`` False the client missed messages that are no longer kept (or the
    group's history was lost) and must resynchronise.

    The client gives its position in the query string (``?offset=41&epoch=...``, see
    :meth:`recovery_position`) or later in a frame
    ``{"type": "history.recover", "group": g, "offset": n, "epoch": e}``. A client with
    no position gets the latest :attr:`history_on_join` messages. At most
    :attr:`max_recovered` messages are replayed; more missed than that is incomplete.
    """

    channel_layer: Any
    channel_name: str
    scope: dict[str, Any]
    #: Messages shown to a client that has no position yet (0: none).
    history_on_join = 0
    #: The most messages one recovery replays; a longer gap is reported incomplete.
    max_recovered = 1000
    #: Whether ``history.recover`` frames are handled. Each costs a group_add and a read
    #: and bypasses the consumer's own frame handling (and any rate limit in it).
    recover_frames = True

    def history_groups(self) -> list[str]:
        """The history groups joined on connect (override; none by default)."""
        return []

    def recovery_position(self, group: str) -> tuple[int | None, str | None]:
        """The client's last ``(offset, epoch)`` for ``group``, from the query string."""
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        offset, epoch = query.get("offset", [""])[0], query.get("epoch", [""])[0]
        return (int(offset) if offset.isdigit() else None), (epoch or None)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        await super().websocket_connect(message)  # type: ignore[misc]
        for group in self.history_groups():
            await self.recover(group, *self.recovery_position(group))

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        frame = _recover_frame(message.get("text")) if self.recover_frames else None
        if frame is None:
            await super().websocket_receive(message)  # type: ignore[misc]
        elif frame["group"] in self.history_groups():
            await self.recover(frame["group"], frame["offset"], frame["epoch"])

    async def recover(self, group: str, since: int | None, epoch: str | None) -> bool:
        """Join ``group``, dispatch what the client missed after ``since``; return complete.

        For a group that keeps no history (``CONFIG["history"]`` does not match it) it only
        joins, sends no ``history.recovered`` frame, and returns False.
        """
        layer = self.channel_layer
        await layer.group_add(group, self.channel_name)
        try:
            return await self._replay(group, since, epoch)
        except HistoryNotEnabled:
            return False

    async def _replay(self, group: str, since: int | None, epoch: str | None) -> bool:
        layer = self.channel_layer
        if since is None:
            page = await layer.group_history(group, limit=max(1, self.history_on_join))
            replay, complete = page.messages[-self.history_on_join :], True
            replay = replay if self.history_on_join else ()
        else:
            limit = min(self.max_recovered, MAX_HISTORY_LIMIT)
            page = await layer.group_history(group, since, epoch, limit)
            replay, complete = page.messages, page.complete and not page.more
        for item in replay:
            await self.dispatch(item.message)
        if not replay and since is not None and page.epoch == epoch:
            # The client has everything up to `since`: a live copy of it is a duplicate.
            self._seen()[page.epoch] = max(self._seen().get(page.epoch, 0), since)
        await self.history_recovered(group, complete, page.epoch, page.top)
        return complete

    async def history_recovered(self, group: str, complete: bool, epoch: str, offset: int) -> None:
        """Tell the client how recovery went (override to change the frame)."""
        await self.send(text_data=json.dumps({  # type: ignore[attr-defined]
            "type": "history.recovered", "group": group, "complete": complete,
            "epoch": epoch, "offset": offset,
        }))  # fmt: skip

    def _seen(self) -> dict[str, int]:
        """Epoch -> the last offset dispatched (epochs are random, so one per group)."""
        seen: dict[str, int] | None = getattr(self, "_history_seen", None)
        if seen is None:
            seen = {}
            self._history_seen = seen
        return seen

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        try:
            for group in self.history_groups():
                await self.channel_layer.group_discard(group, self.channel_name)
        finally:  # even with Redis down, the consumer must still stop
            await super().websocket_disconnect(message)  # type: ignore[misc]

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Drop a history message this consumer dispatched already; dispatch the rest."""
        stamp = message.get(HISTORY_KEY)
        if isinstance(stamp, dict) and "epoch" in stamp and "offset" in stamp:
            seen = self._seen()
            if stamp["offset"] <= seen.get(stamp["epoch"], 0):
                return
            seen[stamp["epoch"]] = stamp["offset"]
        await super().dispatch(message)  # type: ignore[misc]


def _recover_frame(text: Any) -> dict[str, Any] | None:
    """``{"group", "offset", "epoch"}`` of a ``history.recover`` frame, else None."""
    if not isinstance(text, str) or '"history.recover"' not in text:
        return None
    try:
        frame = json.loads(text)
    except ValueError:
        return None
    if not isinstance(frame, dict) or frame.get("type") != "history.recover":
        return None
    offset, epoch, group = frame.get("offset"), frame.get("epoch"), frame.get("group")
    if not isinstance(group, str) or (offset is not None and not isinstance(offset, int)):
        return None
    return {"group": group, "offset": offset, "epoch": epoch if isinstance(epoch, str) else None}
