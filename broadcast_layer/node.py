"""One event loop's share of the layer: a *node* with its connections, channels and groups.

A node owns the process-specific channels created on its loop (their names carry
its id), the pub/sub subscriptions of the groups those channels are in, and every
background task it starts. :meth:`Node.close` cancels and awaits all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript

from . import scripts
from .conf import LayerConfig
from .connection import (
    CONNECTION_ERRORS,
    Subscriber,
    blocking_timeout,
    close_client,
    make_client,
    raise_if_cancelled,
)
from .exceptions import ChannelFull, MessageTooLarge, RedisUnavailable
from .keys import Keys, node_of, shard_index
from .mailbox import Letter, Mailbox, expired
from .subscriptions import Subscriptions

logger = logging.getLogger(__name__)

_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
_CONTROL = b"!"  # node-channel payloads starting with this are control operations


@dataclass(frozen=True)
class NodeStats:
    """A snapshot of one node's local state."""

    node_id: str
    channels: int
    groups: frozenset[str]
    dropped: int
    reconnects: int


class Host:
    """Connections to one Redis server: a command client with its scripts, and a subscriber."""

    def __init__(self, spec: dict[str, Any], on_message: Callable[[bytes, bytes], None],
                 backoff: tuple[float, float]) -> None:  # fmt: skip
        self.client = make_client(spec)
        self.subscriber = Subscriber(spec, on_message, backoff)
        self.send_to_node: AsyncScript = self.client.register_script(scripts.SEND_TO_NODE)
        self.release: AsyncScript = self.client.register_script(scripts.RELEASE)
        self.push: AsyncScript = self.client.register_script(scripts.PUSH)

    async def close(self) -> None:
        await self.subscriber.close()
        await close_client(self.client)


def _copier(message: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """A cheap way to give each member its own copy: shallow when every value is immutable."""
    if all(type(value) in _SCALARS for value in message.values()):
        return message.copy
    return functools.partial(copy.deepcopy, message)


class Node:
    """The layer's state and Redis traffic for one event loop."""

    def __init__(self, config: LayerConfig, serializer: Any) -> None:
        self.config = config
        self.id = uuid.uuid4().hex[:16]
        self.keys = Keys(config.prefix)
        self._serializer = serializer
        self._expiry_ms = int(config.expiry * 1000)
        self._hosts = [Host(spec, self._on_message, config.reconnect_backoff)
                       for spec in config.hosts]  # fmt: skip
        self._node_channel = self.keys.node_channel(self.id)
        self._node_channel_bytes = self._node_channel.encode()
        self._group_prefix = self.keys.group_channel("").encode()
        self.subscriptions = Subscriptions()
        self.mailboxes: dict[str, Mailbox] = {}
        self.dropped = 0
        self._listening = False
        self._abandon: dict[str, asyncio.TimerHandle] = {}
        self._to_release: Counter[str] = Counter()
        self._release_wanted = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background_started = False
        self.closed = False

    # -- helpers -----------------------------------------------------------------------

    def host_for(self, name: str) -> Host:
        """The host a group, a normal channel or a node id is placed on."""
        return self._hosts[shard_index(name, len(self._hosts))]

    def encode(self, message: dict[str, Any]) -> bytes:
        """Serialize once; raise TypeError if impossible, MessageTooLarge if too big."""
        try:
            data: bytes = self._serializer.serialize(message)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"Message cannot be serialized: {exc}") from None
        if len(data) > self.config.max_message_size:
            raise MessageTooLarge(
                f"Message is {len(data)} bytes; max_message_size is {self.config.max_message_size}"
            )
        return data

    def _decode(self, data: bytes) -> dict[str, Any]:
        message: dict[str, Any] = self._serializer.deserialize(data)
        return message

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_background(self) -> None:
        if not self._background_started:
            self._background_started = True
            self._spawn(self._release_loop())
            self._spawn(self._expire_loop())

    def stats(self) -> NodeStats:
        """Counts and groups of this node, for monitoring and tests."""
        return NodeStats(
            node_id=self.id,
            channels=len(self.mailboxes),
            groups=frozenset(self.subscriptions.wanted()),
            dropped=self.dropped,
            reconnects=sum(host.subscriber.reconnects for host in self._hosts),
        )

    # -- channels ----------------------------------------------------------------------

    async def new_channel(self, prefix: str) -> str:
        """Create a local process-specific channel; the node listens before it returns."""
        await self._listen()
        name = f"{prefix}.{self.id}!{uuid.uuid4().hex[:12]}"
        self.mailboxes[name] = Mailbox(self.config.capacity_for(name))
        return name

    async def _listen(self) -> None:
        if not self._listening:
            subscriber = self.host_for(self.id).subscriber
            await subscriber.want([self._node_channel])
            await subscriber.wait_subscribed(self._node_channel, self.config.subscribe_timeout)
            self._listening = True
            self._start_background()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send to one channel; raise ChannelFull when it is at capacity."""
        data = self.encode(message)
        capacity = self.config.capacity_for(channel)
        if "!" not in channel:
            stamped = b"%013d" % int(time.time() * 1000) + data
            queued = await self.host_for(channel).push(
                keys=[self.keys.queue(channel)],
                args=[capacity, self._expiry_ms, stamped[:13], stamped],
            )
            if not queued:
                raise ChannelFull(channel)
            return
        owner = node_of(channel)
        if owner == self.id:
            mailbox = self.mailboxes.get(channel)
            letter = Letter(time.monotonic() + self.config.expiry, self._decode(data), False)
            if mailbox is not None and not mailbox.put(letter):
                raise ChannelFull(channel)
            return
        reached = await self.host_for(owner).send_to_node(
            keys=[self.keys.inflight(channel)],
            args=[capacity, self._expiry_ms, self.keys.node_channel(owner),
                  channel.encode() + b"\n" + data],
        )  # fmt: skip
        if reached == -1:
            raise ChannelFull(channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        """Wait for the next message on a channel (FIFO for a single reader)."""
        if "!" not in channel:
            return await self._receive_queue(channel)
        if node_of(channel) != self.id:
            raise ValueError(f"{channel!r} belongs to another node; only its owner can receive")
        handle = self._abandon.pop(channel, None)
        if handle is not None:
            handle.cancel()
        mailbox = self.mailboxes.get(channel)
        if mailbox is None:
            mailbox = self.mailboxes[channel] = Mailbox(self.config.capacity_for(channel))
        try:
            while True:
                letter = await mailbox.get()
                if letter.counted:
                    self._release(channel)
                if not expired(letter):
                    return letter.message
        except asyncio.CancelledError:
            # A consumer that stops receiving for good leaves its groups after `expiry`.
            if not self.closed and channel in self.mailboxes:
                loop = asyncio.get_running_loop()
                self._abandon[channel] = loop.call_later(
                    self.config.expiry, self.abandon_channel, channel
                )
            raise

    async def _receive_queue(self, channel: str) -> dict[str, Any]:
        host, key = self.host_for(channel), self.keys.queue(channel)
        block = blocking_timeout(host.client)
        delay = self.config.reconnect_backoff[0]
        while True:
            try:
                reply = await host.client.blpop([key], timeout=block)
            except CONNECTION_ERRORS as exc:
                raise_if_cancelled()
                # A blocked reader waits out an outage instead of failing its consumer.
                logger.warning("BLPOP %s failed (%s); retrying in %.2fs", key, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.reconnect_backoff[1])
                continue
            if reply is None:
                continue
            raw: bytes = reply[1]
            if int(raw[:13]) + self._expiry_ms > time.time() * 1000:
                return self._decode(raw[13:])

    def abandon_channel(self, channel: str) -> None:
        """Forget a local channel: drop its messages and leave its groups."""
        self._abandon.pop(channel, None)
        mailbox = self.mailboxes.pop(channel, None)
        if mailbox is not None:
            for letter in mailbox.drain():
                if letter.counted:
                    self._release(channel)
        emptied = self.subscriptions.remove_channel(channel)
        if emptied:
            self._spawn(self._unsubscribe(emptied))

    # -- groups ------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add a membership; for a local member, return once Redis confirmed the subscription."""
        owner = node_of(channel)
        if owner is not None and owner != self.id:
            await self._control(owner, "group_add", group=group, channel=channel)
            return
        self._start_background()
        first = self.subscriptions.add(group, channel, time.monotonic() + self.config.group_expiry)
        subscriber = self.host_for(group).subscriber
        pubsub_channel = self.keys.group_channel(group)
        if first:
            await subscriber.want([pubsub_channel])
        try:
            await subscriber.wait_subscribed(pubsub_channel, self.config.subscribe_timeout)
        except RedisUnavailable:
            if first and self.subscriptions.discard(group, channel):
                await subscriber.unwant([pubsub_channel])
            raise

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove a membership (no-op if absent); unsubscribe when it was the last one."""
        owner = node_of(channel)
        if owner is not None and owner != self.id:
            await self._control(owner, "group_discard", group=group, channel=channel)
            return
        if self.subscriptions.discard(group, channel):
            await self._unsubscribe([group])

    async def group_send(self, group: str, message: dict[str, Any]) -> int:
        """Publish once to the group's channel; return how many nodes received it."""
        data = self.encode(message)
        reached: int = await self.host_for(group).client.publish(
            self.keys.group_channel(group), data
        )
        return reached

    async def _unsubscribe(self, groups: list[str]) -> None:
        for group in groups:
            if group not in self.subscriptions:  # it may have been re-joined meanwhile
                await self.host_for(group).subscriber.unwant([self.keys.group_channel(group)])

    async def _control(self, node_id: str, op: str, **fields: str) -> None:
        payload = _CONTROL + json.dumps({"op": op, **fields}).encode()
        await self.host_for(node_id).client.publish(self.keys.node_channel(node_id), payload)

    # -- incoming ----------------------------------------------------------------------

    def _on_message(self, pubsub_channel: bytes, data: bytes) -> None:
        if pubsub_channel == self._node_channel_bytes:
            self._on_direct(data)
        elif pubsub_channel.startswith(self._group_prefix):
            self._on_group(pubsub_channel[len(self._group_prefix) :].decode(), data)

    def _on_direct(self, payload: bytes) -> None:
        if payload.startswith(_CONTROL):
            self._on_control(json.loads(payload[1:]))
            return
        channel_bytes, _, data = payload.partition(b"\n")
        channel = channel_bytes.decode()
        mailbox = self.mailboxes.get(channel)
        letter = None
        if mailbox is not None:
            try:
                letter = Letter(time.monotonic() + self.config.expiry, self._decode(data), True)
            except Exception:
                logger.exception("Dropped an undecodable message for %s", channel)
        if letter is None or mailbox is None or not mailbox.put(letter):
            self._release(channel)

    def _on_control(self, op: dict[str, str]) -> None:
        if op.get("op") == "group_add":
            self._spawn(self.group_add(op["group"], op["channel"]))
        elif op.get("op") == "group_discard":
            self._spawn(self.group_discard(op["group"], op["channel"]))

    def _on_group(self, group: str, data: bytes) -> None:
        members = self.subscriptions.members(group)
        if not members:
            return
        try:
            message = self._decode(data)
        except Exception:
            logger.exception("Dropped an undecodable message for group %s", group)
            return
        now = time.monotonic()
        deadline = now + self.config.expiry
        copy_of = _copier(message)
        stale = []
        for channel, until in members.items():
            if until <= now:
                stale.append(channel)
            elif (mailbox := self.mailboxes.get(channel)) is not None:
                if not mailbox.put(Letter(deadline, copy_of(), False)):
                    self.dropped += 1
            else:  # a normal channel, or a local one not receiving yet
                self._spawn(self._forward(channel, copy_of()))
        if stale:
            emptied = [group for channel in stale if self.subscriptions.discard(group, channel)]
            self._spawn(self._unsubscribe(emptied))

    async def _forward(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await self.send(channel, message)
        except ChannelFull:
            self.dropped += 1
        except CONNECTION_ERRORS as exc:
            logger.warning("Could not forward a group message to %s: %s", channel, exc)

    # -- background --------------------------------------------------------------------

    def _release(self, channel: str) -> None:
        self._to_release[channel] += 1
        self._release_wanted.set()

    async def _release_loop(self) -> None:
        """Give back in-flight slots of received messages, batched into one pipeline per host."""
        # Checks `closed` as well as relying on cancellation: redis-py's pipeline can
        # swallow a CancelledError that lands inside execute().
        while not self.closed:
            await self._release_wanted.wait()
            self._release_wanted.clear()
            batch, self._to_release = self._to_release, Counter()
            pipes: dict[int, Any] = {}
            for channel, count in batch.items():
                owner = node_of(channel) or channel
                index = shard_index(owner, len(self._hosts))
                if index not in pipes:
                    pipes[index] = self._hosts[index].client.pipeline(transaction=False)
                await self._hosts[index].release(
                    keys=[self.keys.inflight(channel)], args=[count], client=pipes[index]
                )
            for pipe in pipes.values():
                try:
                    await pipe.execute()
                except CONNECTION_ERRORS as exc:  # the counters expire by themselves
                    raise_if_cancelled()
                    logger.warning("Could not release in-flight counters: %s", exc)

    async def _expire_loop(self) -> None:
        """Drop memberships older than ``group_expiry`` and unsubscribe emptied groups."""
        interval = min(self.config.group_expiry, 30.0)
        while True:
            await asyncio.sleep(interval)  # a timer, not a hot path
            emptied = self.subscriptions.expire(time.monotonic())
            if emptied:
                await self._unsubscribe(emptied)

    async def ping(self) -> None:
        """PING every host (raises redis-py's ConnectionError when one is down)."""
        for host in self._hosts:
            await host.client.ping()

    async def flush_keys(self) -> None:
        """Delete every key of this prefix on every host (SCAN, never KEYS)."""
        for host in self._hosts:
            for pattern in self.keys.patterns():
                batch = [key async for key in host.client.scan_iter(match=pattern, count=1000)]
                if batch:
                    await host.client.unlink(*batch)

    async def close(self) -> None:
        """Cancel and await every task, close every connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._release_wanted.set()
        for handle in self._abandon.values():
            handle.cancel()
        self._abandon.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for host in self._hosts:
            await host.close()
