"""Delivery: what a node does with each pub/sub message its hosts read.

A message on the node's own channel is a direct send to one of its channels, a control
message, a health probe or a credit marker; a message on a group's channel is
deserialized once and fanned out to every local member's mailbox in memory. When
members' mailboxes fill up, the reader waits for their consumers before it reads on
(``backpressure.py``).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .. import _metrics
from .._protocol.control import CONTROL_MARK, PROBE_MARK
from .._protocol.history import open_frame, stamp
from .._protocol.records import CREDIT_MARK
from .._redis.errors import CONNECTION_ERRORS
from ..exceptions import ChannelFull
from .backpressure import Blocked, should_wait, wait_for_room
from .channels import Channels
from .control import Control
from .core import NodeCore
from .credit import Credit
from .drops import DropLog
from .groups import Groups
from .health import Probe
from .history import History
from .mailbox import FILLING, Letter

logger = logging.getLogger(__name__)

_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})


def _copier(message: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """A cheap way to give each member its own copy: shallow when every value is immutable."""
    if all(type(value) in _SCALARS for value in message.values()):
        return message.copy
    return functools.partial(copy.deepcopy, message)


class Delivery:
    """Routes incoming pub/sub messages to mailboxes, control, or a forward."""

    def __init__(
        self,
        core: NodeCore,
        channels: Channels,
        groups: Groups,
        control: Control,
        credit: Credit,
        rejected: DropLog,
        probe: Probe,
    ) -> None:
        self._core = core
        self._channels = channels
        self._subscriptions = groups.subscriptions
        self._groups = groups
        self._control = control
        self._credit = credit
        self._rejected = rejected
        self._probe = probe
        self._metrics = _metrics.recorder  # bound once: a no-op when metrics are off
        self._node_channel = core.node_channel.encode()
        self._group_of = core.keys.group_of
        self._history: History = groups.history
        self._history.set_delivery(self._on_history)

    def on_message(self, pubsub_channel: bytes, data: bytes) -> Awaitable[None] | None:
        """Handle one pub/sub message on the reader task, without blocking.

        Returns what the reader must await before it reads the next message: None, or
        the back-pressure of a group message whose members' mailboxes are filling up.
        """
        if pubsub_channel == self._node_channel:
            self._on_direct(data)
        elif (group := self._group_of(pubsub_channel)) is not None:
            return self._on_group(group, data)
        return None

    def _on_direct(self, payload: bytes) -> None:
        if payload.startswith(CONTROL_MARK):
            op = self._control.codec.open(payload, self._core.id)  # None: dropped
            if op is not None:
                self._control.on_control(op)
            return
        if payload.startswith(PROBE_MARK):
            self._probe.answer(payload)
            return
        if payload.startswith(CREDIT_MARK):
            self._credit.marker(payload)
            return
        channel_bytes, _, data = payload.partition(b"\n")
        channel = channel_bytes.decode()
        mailbox = self._channels.mailboxes.get(channel)
        if mailbox is None:
            return  # an abandoned channel, or a made-up name: nobody will receive it
        self._credit.arrived(channel)
        try:
            letter: Letter = (time.monotonic() + self._core.config.expiry,
                              self._core.decode(data), None)  # fmt: skip
        except Exception as exc:  # e.g. forged, or encrypted with a key this node lacks
            self._rejected.drop("an undecodable message", f"for {channel}: {exc!r}")
            return
        if mailbox.put_remote(letter):
            self._metrics.delivered("direct", 1)
        else:
            self._channels.drop(channel)  # past capacity + slack: see credit.py

    def _on_group(self, group: str, data: bytes) -> Awaitable[None] | None:
        if not self._subscriptions.members(group):
            return None
        frame = open_frame(data)
        if frame is not None:  # a history group's: in order, gaps filled (history.py)
            return self._history.on_live(group, *frame)
        try:
            message, sent = self._core.decode_stamped(data)
        except Exception as exc:
            self._rejected.drop("an undecodable message", f"for group {group}: {exc!r}")
            return None
        if sent is not None:
            self._metrics.lag(sent)
        return self._fan_out(group, message, lambda: data)

    def _on_history(
        self, group: str, offset: int, epoch: str, data: bytes
    ) -> Awaitable[None] | None:
        if not self._subscriptions.members(group):
            return None
        try:
            message = stamp(self._history.decode(data), offset, epoch)
        except Exception as exc:
            self._rejected.drop("an undecodable message", f"for group {group}: {exc!r}")
            return None
        # A normal channel gets the stamped message, serialized again only if there is one.
        return self._fan_out(group, message, functools.cache(lambda: self._core.encode(message)))

    def _fan_out(
        self, group: str, message: dict[str, Any], data: Callable[[], bytes]
    ) -> Awaitable[None] | None:
        """Put one letter into every local member's mailbox; what the reader must await
        before the next message (None: nothing, the common case; see backpressure.py)."""
        members = self._subscriptions.members(group)
        now = time.monotonic()
        letter: Letter = (now + self._core.config.expiry, message, _copier(message))
        mailboxes = self._channels.mailboxes
        stale = []
        blocked: Blocked = []
        delivered = 0
        filling = False
        for channel, until in members.items():
            if until <= now:
                stale.append(channel)
            elif (mailbox := mailboxes.get(channel)) is not None:
                fill = mailbox.offer(letter)
                if fill:  # ROOMY
                    delivered += 1
                elif fill is FILLING:
                    delivered += 1
                    filling = True
                elif should_wait(mailbox, now):  # FULL
                    blocked.append((channel, mailbox))
                else:  # stalled: its consumer stopped taking messages
                    self._channels.drop(channel)
            else:  # a normal channel, or a local one not receiving yet
                self._core.spawn(self._forward(channel, data()))
        self._metrics.delivered("group", delivered)
        if stale:
            emptied = self._groups.leave_stale(group, stale)
            self._core.spawn(self._groups.unsubscribe(emptied))
        if blocked:
            return wait_for_room(letter, blocked, mailboxes, self._channels.drop)
        return asyncio.sleep(0) if filling else None  # let the consumers run

    async def _forward(self, channel: str, data: bytes) -> None:
        try:
            await self._channels.send(channel, data)
        except ChannelFull:
            self._channels.drop(channel)
        except CONNECTION_ERRORS as exc:
            logger.warning("Could not forward a group message to %s: %s", channel, exc)
