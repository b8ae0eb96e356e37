"""History groups on one node: appends, reads, and gapless delivery across reconnects.

The node remembers the last offset it delivered for each history group it is subscribed
to. When a host's pub/sub connection comes back, or a live message skips offsets, it
reads the group's stream from there and delivers what was missed, in order, before any
newer live message (those wait in a buffer meanwhile), dropping offsets already
delivered. See docs/history.md.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels_redis.serializers import registry as serializers

from .. import _metrics
from .._protocol.history import (
    MAX_HISTORY_LIMIT,
    HistoryCalls,
    HistoryPage,
    HistoryPolicy,
    build_page,
)
from .._redis.host import Host
from ..conf import LayerConfig
from .core import NodeCore

logger = logging.getLogger(__name__)

#: Called with (group, offset, epoch, serialized message) to fan a message out; returns
#: what to await before the next one (back-pressure), or None.
Deliver = Callable[[str, int, str, bytes], Awaitable[None] | None]
#: One live or recovered message: (offset, epoch, serialized message).
Entry = tuple[int, str, bytes]


def history_decoder(config: LayerConfig, serializer: Any) -> Callable[[bytes], dict[str, Any]]:
    """How kept messages are decoded: as ``serializer`` does, but with no Fernet ttl, and
    without the send-time stamp metrics may add.

    An encrypted message is refused after ``expiry`` seconds by Channels' serializers;
    a kept one may be replayed until the group's history ``ttl``.
    """
    if config.symmetric_encryption_keys:
        serializer = serializers.get_serializer(
            config.serializer_format,
            symmetric_encryption_keys=config.symmetric_encryption_keys,
            expiry=None,
        )

    def decode(data: bytes) -> dict[str, Any]:
        message: dict[str, Any] = serializer.deserialize(data)
        message.pop(_metrics.STAMP, None)
        return message

    return decode


class History:
    """A node's history groups: ``group_send``'s append, reads, and gapless delivery."""

    def __init__(self, core: NodeCore, serializer: Any) -> None:
        self._core = core
        self.calls = HistoryCalls(core.keys)
        self.decode = history_decoder(core.config, serializer)
        self._deliver: Deliver | None = None
        self._last: dict[str, tuple[str, int]] = {}  # group -> (epoch, offset) delivered
        self._buffers: dict[str, list[Entry]] = {}  # groups catching up -> live ones held
        self._again: set[str] = set()  # reconnected while catching up: read once more
        #: Reads of a group's kept messages to fill a gap (reconnects, skipped offsets).
        self.reads = 0
        #: Catch-ups that could not recover everything (trimmed, or a new epoch).
        self.unrecovered = 0

    def set_delivery(self, deliver: Deliver) -> None:
        """Where recovered and live messages go, in order (the node's delivery)."""
        self._deliver = deliver

    def policy(self, group: str) -> HistoryPolicy | None:
        """What ``CONFIG["history"]`` keeps for ``group`` (None: a plain group)."""
        return self._core.config.history_for(group)

    async def append(self, group: str, policy: HistoryPolicy, data: bytes) -> int:
        """Append and publish in one script (not retried once sent); return nodes reached."""
        host = self._core.host_for(group)
        appended = await host.run(self.calls.append(group, policy, data))
        return appended.reached

    async def read(
        self, group: str, policy: HistoryPolicy, since: int | None, epoch: str | None, limit: int
    ) -> HistoryPage:
        """One page of the group's history (see ``HistoryPage``)."""
        raw = await self._core.host_for(group).run(
            self.calls.read(group, policy, since, epoch, limit)
        )
        return build_page(raw, since, epoch, self.decode)

    def reset(self, group: str) -> None:
        """Forget what was delivered for ``group`` (its subscription starts or ends)."""
        self._last.pop(group, None)

    # -- gapless delivery --------------------------------------------------------------

    def on_live(self, group: str, offset: int, epoch: str, data: bytes) -> Awaitable[None] | None:
        """A history group's message from pub/sub: deliver it, hold it, or fetch a gap.

        Returns what the reader awaits before its next message (back-pressure), or None.
        """
        buffer = self._buffers.get(group)
        if buffer is not None:
            buffer.append((offset, epoch, data))
            return None
        last = self._last.get(group)
        if last is not None and last[0] == epoch and offset > last[1] + 1:
            self._buffers[group] = [(offset, epoch, data)]  # the gap is in the stream
            self._core.spawn(self._catch_up(group))
            return None
        return self._emit(group, offset, epoch, data)

    def _emit(self, group: str, offset: int, epoch: str, data: bytes) -> Awaitable[None] | None:
        last = self._last.get(group)
        if last is not None and last[0] == epoch and offset <= last[1]:
            return None  # delivered already (live, then read again)
        self._last[group] = (epoch, offset)
        if self._deliver is None:
            return None
        return self._deliver(group, offset, epoch, data)

    async def _emit_waiting(self, group: str, offset: int, epoch: str, data: bytes) -> None:
        """Deliver one recovered or held message, waiting out its back-pressure, so the
        next one cannot overtake it in a mailbox that was full."""
        pause = self._emit(group, offset, epoch, data)
        if pause is not None:
            await pause

    def restored(self, host: Host) -> None:
        """``host``'s pub/sub connection is back and resubscribed: read what was missed.

        Called on the reader task (never blocks): each group of the host catches up. Not
        for a cluster's host, whose masters acknowledge each group again on its own
        (:meth:`resubscribed`): the groups of masters that stayed up missed nothing.
        """
        for group in list(self._last):
            if self._core.host_for(group) is host:
                self.resubscribed(group)

    def resubscribed(self, group: str) -> None:
        """``group``'s subscription is acknowledged again: read what was missed.

        Called on the reader task (never blocks), before any later live message: a
        group that delivered something starts a catch-up, or reads once more if one is
        running; one that delivered nothing yet has nothing to catch up.
        """
        if group not in self._last:
            return
        if group in self._buffers:
            self._again.add(group)
        else:
            self._buffers[group] = []
            self._core.spawn(self._catch_up(group))

    async def _catch_up(self, group: str) -> None:
        try:
            while True:
                self._again.discard(group)
                await self._read_missed(group)
                if group not in self._again:
                    break
        except Exception as exc:  # the next reconnect or gap tries again
            logger.warning("History catch-up of %s failed: %r", group, exc)
        finally:
            self._again.discard(group)
            await self._release_held(group)

    async def _release_held(self, group: str) -> None:
        """Deliver the live messages held during a catch-up, in order. The buffer stays
        in place until it is empty, so a live message read while one of them waits for
        room in a mailbox is held too, rather than overtaking it."""
        held = self._buffers.get(group, [])
        held.sort()
        done = 0
        try:
            while done < len(held):  # live messages may be appended meanwhile, in order
                offset, epoch, data = held[done]
                done += 1
                await self._emit_waiting(group, offset, epoch, data)
        finally:
            self._buffers.pop(group, None)
            if group in self._again and not self._core.closed:
                # Resubscribed while those went out: read what was missed once more.
                self._again.discard(group)
                self.resubscribed(group)

    async def _read_missed(self, group: str) -> None:
        core, policy, last = self._core, self.policy(group), self._last.get(group)
        if policy is None or last is None:
            return
        host = core.host_for(group)
        # Read only once resubscribed: whatever is published later arrives live.
        await host.subscriber.wait_subscribed(
            core.keys.group_channel(group), core.config.subscribe_timeout
        )
        epoch, since = last
        while True:
            self.reads += 1
            raw = await host.run(self.calls.read(group, policy, since, epoch, MAX_HISTORY_LIMIT))
            if raw.epoch != epoch or raw.first > since + 1:
                self.unrecovered += 1
                logger.warning(
                    "History of %s after offset %d is lost (%s): not recovered",
                    group, since, "new epoch" if raw.epoch != epoch else "trimmed",
                )  # fmt: skip
                return
            for offset, data in raw.entries:
                await self._emit_waiting(group, offset, raw.epoch, data)
            if not raw.entries or raw.entries[-1][0] >= raw.top:
                return
            since = raw.entries[-1][0]
