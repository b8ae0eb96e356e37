"""Channels on one node: its process-specific mailboxes, sends, receives and the idle sweep.

A process-specific channel (``prefix.<node id>!<random>``) lives in a mailbox of the
node that made it; a normal channel is a Redis list shared by competing receivers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, cast

from .. import _metrics
from .._protocol import records
from .._protocol.keys import node_of
from .._redis import retry
from .._redis.clients import blocking_timeout
from .._redis.errors import CONNECTION_ERRORS
from .._redis.retry import raise_if_cancelled
from ..exceptions import ChannelFull
from .control import Control
from .core import NodeCore, both
from .credit import Credit
from .drops import FullMailboxLog
from .groups import Groups
from .mailbox import Mailbox
from .registry_writer import RegistryWriter

logger = logging.getLogger(__name__)

#: The message a consumer receives when it is disconnected through the layer.
DISCONNECT_TYPE = "broadcast.disconnect"


class Channels:
    """``new_channel``, ``send``, ``receive`` and ``disconnect`` for one node."""

    def __init__(
        self,
        core: NodeCore,
        registry: RegistryWriter,
        groups: Groups,
        control: Control,
        credit: Credit,
    ) -> None:
        self._core = core
        self._registry = registry
        self._groups = groups
        self._control = control
        self.credit = credit
        self.mailboxes: dict[str, Mailbox] = {}
        self.dropped = 0
        self.full_log = FullMailboxLog(logger)
        self._expiry_ms = int(core.config.expiry * 1000)

    async def new_channel(self, prefix: str) -> str:
        """Create a local process-specific channel; the node listens before it returns."""
        core = self._core
        await core.listen()
        name = f"{prefix}.{core.id}!{uuid.uuid4().hex[:12]}"
        mailbox = self.mailboxes[name] = self.credit.mailbox(name, core.config.capacity_for(name))
        _metrics.recorder.channels(1)
        self._registry.records.open(name)
        try:
            await both(
                self._registry.wait(self._registry.submit(core.calls.open(name, core.id))),
                self.credit.open(mailbox),
            )
        except BaseException:
            del self.mailboxes[name]  # no channel half made
            _metrics.recorder.channels(-1)
            self._registry.records.forget(name)
            self.credit.forget(name)
            raise
        return name

    async def send(self, channel: str, data: bytes) -> int:
        """Send a serialized message to one channel; raise ChannelFull at capacity.

        Returns how many nodes took it (0: the owning node is gone; 1 for a queue). The
        capacity of another node's channel is checked against the credit its node keeps
        (credit.py); that of a normal channel against this node's configuration.
        """
        core = self._core
        if node_of(channel) != core.id:
            config = core.config
            name, call = records.channel_send(
                core.keys, channel, data, config.capacity_for(channel), config.expiry
            )
            return await core.host_for(name).run(call)
        mailbox = self.mailboxes.get(channel)
        if mailbox is None:
            return 0
        if not mailbox.put((time.monotonic() + core.config.expiry, core.decode(data), None)):
            raise ChannelFull(channel)
        _metrics.recorder.delivered("direct", 1)
        return 1

    async def receive(self, channel: str) -> dict[str, Any]:
        """Wait for the next message on a channel (FIFO for a single reader)."""
        mailbox = self.mailboxes.get(channel)
        if mailbox is None:
            mailbox = self._mailbox_for_receive(channel)
            if mailbox is None:
                return await self._receive_queue(channel)
        message = self.take(mailbox)
        return message if message is not None else await self.wait_for(mailbox)

    @staticmethod
    async def wait_for(mailbox: Mailbox) -> dict[str, Any]:
        """The next message of a local mailbox :meth:`take` found none in, once one comes."""
        while True:
            # Counted, not timed: the upkeep's sweep abandons a channel only while no
            # receive is waiting and the last one ended more than `expiry` ago.
            mailbox.receivers += 1
            try:
                await mailbox.wait()
            finally:
                mailbox.receivers -= 1
                if not mailbox.receivers:
                    mailbox.idle_since = time.monotonic()
            message = Channels.take(mailbox)
            if message is not None:  # None: another receive took it, or it had expired
                return message

    @staticmethod
    def take(mailbox: Mailbox) -> dict[str, Any] | None:
        """The next unexpired message already in a local mailbox, without waiting (None:
        there is none). Under load a consumer finds one almost every time, so the layer
        tries this before it awaits anything."""
        while (letter := mailbox.take()) is not None:
            deadline, message, copy_of = letter
            now = mailbox.idle_since = time.monotonic()  # a receive that ends now
            if deadline > now:
                return message if copy_of is None else copy_of()
            _metrics.recorder.dropped("expired")
        return None

    def _mailbox_for_receive(self, channel: str) -> Mailbox | None:
        """The mailbox of a local channel not created by new_channel (None: a queue)."""
        owner = node_of(channel)
        if owner is None:
            return None
        if owner != self._core.id:
            raise ValueError(f"{channel!r} belongs to another node; only its owner can receive")
        self._core.start_background()  # so the sweep frees this mailbox too once it is idle
        capacity = self._core.config.capacity_for(channel)
        mailbox = self.mailboxes[channel] = self.credit.mailbox(channel, capacity)
        _metrics.recorder.channels(1)
        if mailbox.high <= 0:  # counted from the start: its key is written soon
            self.credit.changed(mailbox)
        return mailbox

    async def _receive_queue(self, channel: str) -> dict[str, Any]:
        core = self._core
        host, key = core.host_for(channel), core.keys.queue(channel)
        block = blocking_timeout(host.client)
        retrying = retry.Retrying(core.config.reconnect_backoff)
        while True:
            raise_if_cancelled()  # redis-py may have swallowed a cancellation
            try:
                # Retrying BLPOP never duplicates: an entry is popped by one reply only.
                reply = await host.client.blpop([key], timeout=block)
            except CONNECTION_ERRORS as exc:
                raise_if_cancelled()
                # A blocked reader waits out an outage instead of failing its consumer.
                delay = retrying.next_delay()
                logger.warning("BLPOP %s failed (%s); retrying in %.2fs", key, exc, delay)
                await asyncio.sleep(delay)
                continue
            retrying.reset()
            if reply is None:
                continue
            raw = cast(bytes, reply[1])  # the client does not decode responses
            if int(raw[:13]) + self._expiry_ms <= time.time() * 1000:
                continue  # expired while queued
            try:
                return core.decode(raw[13:])
            except Exception:  # e.g. encrypted with a key this node lacks
                logger.exception("Dropped an undecodable message from %s", channel)

    async def disconnect(self, channel: str) -> bool:
        """Deliver a ``broadcast.disconnect`` message to a channel on any node.

        Returns False when the channel's node is not running (nothing to disconnect).
        """
        owner = node_of(channel)
        if owner is None:
            raise ValueError(f"{channel!r} is not a process-specific channel")
        if owner != self._core.id:
            return await self._control.request(owner, "disconnect", channel=channel)
        mailbox = self.mailboxes.get(channel)
        if mailbox is not None:
            message = {"type": DISCONNECT_TYPE}
            mailbox.put_urgent((time.monotonic() + self._core.config.expiry, message, None))
        return mailbox is not None

    def drop(self, channel: str) -> None:
        """Count a message dropped because the channel is full, and warn (rate-limited)."""
        self.dropped += 1
        _metrics.recorder.dropped("mailbox_full")
        self.full_log.record(channel)

    def sweep(self, now: float) -> None:
        """Abandon every local channel with no receive waiting or ended for over ``expiry``.

        Called on each upkeep tick, so an idle channel goes between ``expiry`` and
        ``expiry`` + one tick after its last receive ended (or after it was made).
        Synchronous: no receive can start between the check and the removal.
        """
        expiry = self._core.config.expiry
        cutoff = now - expiry
        idle = [channel for channel, mailbox in self.mailboxes.items()
                if not mailbox.receivers and mailbox.idle_since <= cutoff]  # fmt: skip
        emptied: list[str] = []
        for channel in idle:
            emptied += self._abandon(channel)
        if emptied:
            self._core.spawn(self._groups.unsubscribe(emptied))
        if idle:
            logger.debug("Abandoned %d channels idle for over %ss", len(idle), expiry)

    def _abandon(self, channel: str) -> list[str]:
        """Forget a local channel: free its mailbox, delete its credit key, leave its groups
        here and in the registry. Returns the groups left without local members.
        """
        mailbox = self.mailboxes.pop(channel)
        _metrics.recorder.channels(-1)
        mailbox.drain()
        self.credit.forget(channel)
        self._registry.records.forget(channel)
        subscriptions = self._groups.subscriptions
        self._registry.close_channel(channel, sorted(subscriptions.groups_of(channel)))
        return subscriptions.remove_channel(channel)
