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
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from . import retry, scripts
from .conf import LayerConfig
from .connection import Host, blocking_timeout
from .control import CONTROL_MARK, ControlCodec, DropLog
from .drops import FullMailboxLog
from .exceptions import ChannelFull, RedisUnavailable
from .keys import Keys, node_of, shard_index
from .mailbox import Letter, Mailbox
from .reassert import LocalRecords
from .registry import RegistryCalls
from .retry import CONNECTION_ERRORS, raise_if_cancelled
from .scripts import Call
from .subscriptions import Subscriptions

logger = logging.getLogger(__name__)

_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
#: The message a consumer receives when it is disconnected through the layer.
DISCONNECT_TYPE = "broadcast.disconnect"
MAX_METADATA_BYTES = 4096
T = TypeVar("T")


@dataclass(frozen=True)
class NodeStats:
    """A snapshot of one node's local state."""

    node_id: str
    channels: int
    groups: frozenset[str]
    dropped: int
    reconnects: int
    #: Messages that could not be opened: undecodable, forged or replayed.
    rejected: int = 0
    reasserts: int = 0


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
        self._hosts = [Host(spec, self._on_message, config.reconnect_backoff,
                            config.failover_timeout, config.pool_limits)
                       for spec in config.hosts]  # fmt: skip
        self._node_channel = self.keys.node_channel(self.id)
        self._node_channel_bytes = self._node_channel.encode()
        self._group_prefix = self.keys.group_channel("").encode()
        self.subscriptions = Subscriptions()
        self.mailboxes: dict[str, Mailbox] = {}
        self.dropped = 0
        self._drops = DropLog(logger)
        self._codec = ControlCodec(config.symmetric_encryption_keys, config.expiry + 10,
                                   self._drops)  # fmt: skip
        self._full = FullMailboxLog(logger)
        self.calls = RegistryCalls(config)
        self.registry = self._hosts[0]  # the registry lives on the first host
        self.registry.on_master_switch(self._registry_moved)
        self.records = LocalRecords(self.calls, self.id)
        self._started = time.time()
        self._registered = False  # this node may have records in the registry
        self._acks: dict[str, asyncio.Future[bool]] = {}
        self._listening = False
        self._to_release: Counter[str] = Counter()
        self._release_wanted = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background_started = False
        self.closed = False

    # -- helpers -----------------------------------------------------------------------

    def host_for(self, name: str) -> Host:
        """The host a group, a normal channel or a node id is placed on."""
        return self._hosts[shard_index(name, len(self._hosts))]

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
            self._spawn(self._heartbeat_loop())

    def stats(self) -> NodeStats:
        """Counts and groups of this node, for monitoring and tests."""
        return NodeStats(
            node_id=self.id,
            channels=len(self.mailboxes),
            groups=frozenset(self.subscriptions.wanted()),
            dropped=self.dropped,
            reconnects=sum(host.subscriber.reconnects for host in self._hosts),
            rejected=self._drops.count,
            reasserts=self.records.reasserts,
        )

    # -- channels ----------------------------------------------------------------------

    async def new_channel(self, prefix: str) -> str:
        """Create a local process-specific channel; the node listens before it returns."""
        await self._listen()
        name = f"{prefix}.{self.id}!{uuid.uuid4().hex[:12]}"
        self.mailboxes[name] = Mailbox(self.config.capacity_for(name))
        self.records.open(name)
        try:
            await self._registry_wait(self.registry.submit(self.calls.open(name, self.id)))
        except BaseException:
            del self.mailboxes[name]  # no channel half made
            self.records.forget(name)
            raise
        return name

    async def _listen(self) -> None:
        """Subscribe to this node's channel and publish its record (once)."""
        if not self._listening:
            subscriber = self.host_for(self.id).subscriber
            await subscriber.want([self._node_channel])
            self._registered = True
            await _both(
                subscriber.wait_subscribed(self._node_channel, self.config.subscribe_timeout),
                self.registry.run(self.calls.heartbeat(self.id, self._started, 0)),
            )
            self._listening = True
            self._start_background()

    async def send(self, channel: str, data: bytes) -> int:
        """Send a serialized message to one channel; raise ChannelFull at capacity.

        Returns how many nodes took it (0: the owning node is gone; 1 for a queue).
        """
        owner = node_of(channel)
        if owner != self.id:
            name, call = channel_send_call(self.keys, self.config, channel, data)
            return await self.host_for(name).run(call)
        mailbox = self.mailboxes.get(channel)
        if mailbox is None:
            return 0
        if not mailbox.put(
            (time.monotonic() + self.config.expiry, self._decode(data), False, None)
        ):
            raise ChannelFull(channel)
        return 1

    async def receive(self, channel: str) -> dict[str, Any]:
        """Wait for the next message on a channel (FIFO for a single reader)."""
        mailbox = self.mailboxes.get(channel)
        if mailbox is None:
            mailbox = self._mailbox_for_receive(channel)
            if mailbox is None:
                return await self._receive_queue(channel)
        # Counted, not timed: the upkeep's sweep abandons a channel only while no
        # receive is in progress and the last one ended more than `expiry` ago.
        mailbox.receivers += 1
        try:
            while True:
                deadline, message, counted, copy_of = await mailbox.get()
                if counted:
                    self._release(channel)
                if deadline > time.monotonic():
                    return message if copy_of is None else copy_of()
        finally:
            mailbox.receivers -= 1
            if not mailbox.receivers:
                mailbox.idle_since = time.monotonic()

    def _mailbox_for_receive(self, channel: str) -> Mailbox | None:
        """The mailbox of a local channel not created by new_channel (None: a queue)."""
        owner = node_of(channel)
        if owner is None:
            return None
        if owner != self.id:
            raise ValueError(f"{channel!r} belongs to another node; only its owner can receive")
        self._start_background()  # so the sweep frees this mailbox too once it is idle
        mailbox = self.mailboxes[channel] = Mailbox(self.config.capacity_for(channel))
        return mailbox

    async def _receive_queue(self, channel: str) -> dict[str, Any]:
        host, key = self.host_for(channel), self.keys.queue(channel)
        block = blocking_timeout(host.client)
        retrying = retry.Retrying(self.config.reconnect_backoff)
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
                return self._decode(raw[13:])
            except Exception:  # e.g. encrypted with a key this node lacks
                logger.exception("Dropped an undecodable message from %s", channel)

    def _sweep(self, now: float) -> None:
        """Abandon every local channel with no receive in progress for over ``expiry``.

        Called on each upkeep tick, so an idle channel goes between ``expiry`` and
        ``expiry`` + one tick after its last receive ended (or after it was made).
        Synchronous: no receive can start between the check and the removal.
        """
        cutoff = now - self.config.expiry
        idle = [channel for channel, mailbox in self.mailboxes.items()
                if not mailbox.receivers and mailbox.idle_since <= cutoff]  # fmt: skip
        emptied: list[str] = []
        for channel in idle:
            emptied += self._abandon(channel)
        if emptied:
            self._spawn(self._unsubscribe(emptied))
        if idle:
            logger.debug("Abandoned %d channels idle for over %ss", len(idle), self.config.expiry)

    def _abandon(self, channel: str) -> list[str]:
        """Forget a local channel: free its mailbox and in-flight slots, leave its groups
        here and in the registry. Returns the groups left without local members.
        """
        mailbox = self.mailboxes.pop(channel)
        for _, _, counted, _ in mailbox.drain():
            if counted:
                self._release(channel)
        self.records.forget(channel)
        self.registry.submit_quietly(self.calls.close(channel, self.id))
        return self.subscriptions.remove_channel(channel)

    # -- groups ------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add a membership; return once Redis confirmed the owning node's subscription.

        A channel of another node is added by that node (a control message), and this
        call waits for its confirmation; a channel whose node is gone is a no-op.
        """
        owner = node_of(channel)
        if owner is not None and owner != self.id:
            await self._remote(owner, "group_add", group=group, channel=channel)
            return
        self._start_background()
        self._registered = True
        new = channel not in self.subscriptions.members(group)
        first = self.subscriptions.add(group, channel, time.monotonic() + self.config.group_expiry)
        # Submitted right after the local change, before any await: the registry sees
        # concurrent joins and leaves of this node in the order they happened here.
        joined = self.registry.submit(self.calls.join(group, channel, self.id))
        subscriber = self.host_for(group).subscriber
        pubsub_channel = self.keys.group_channel(group)
        try:
            if first:
                await subscriber.want([pubsub_channel])
            if subscriber.acknowledged(pubsub_channel):  # the common case: just the registry
                await self._registry_wait(joined)
            else:
                await _both(
                    subscriber.wait_subscribed(pubsub_channel, self.config.subscribe_timeout),
                    self._registry_wait(joined),
                )
        except BaseException:
            if new:  # leave nothing behind: not in the group, not in the registry
                if self.subscriptions.discard(group, channel):
                    await subscriber.unwant([pubsub_channel])
                self.registry.submit_quietly(self.calls.leave(group, channel, self.id))
            raise

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove a membership (a no-op if absent); unsubscribe when it was the last one."""
        owner = node_of(channel)
        if owner is not None and owner != self.id:
            await self._remote(owner, "group_discard", group=group, channel=channel)
            return
        if owner is None and channel not in self.subscriptions.members(group):
            return  # a normal channel held by another node (or nobody): see docs
        last = self.subscriptions.discard(group, channel)
        left = self.registry.submit(self.calls.leave(group, channel, self.id))
        if last:
            await _both(self._unsubscribe([group]), self._registry_wait(left))
        else:
            await self._registry_wait(left)

    async def disconnect(self, channel: str) -> bool:
        """Deliver a ``broadcast.disconnect`` message to a channel on any node.

        Returns False when the channel's node is not running (nothing to disconnect).
        """
        owner = node_of(channel)
        if owner is None:
            raise ValueError(f"{channel!r} is not a process-specific channel")
        if owner != self.id:
            return await self._remote(owner, "disconnect", channel=channel)
        mailbox = self.mailboxes.get(channel)
        if mailbox is not None:
            message = {"type": DISCONNECT_TYPE}
            mailbox.put_urgent((time.monotonic() + self.config.expiry, message, False, None))
        return mailbox is not None

    async def set_metadata(self, channel: str, metadata: dict[str, Any]) -> bool:
        """Attach JSON metadata (user id, display name...) to a channel's registry record.

        Returns False (and records nothing) when the registry does not know the channel.
        A channel of this node is known while it exists here: the node keeps its metadata
        and, if Redis lost the record, writes both back with its next re-assert.
        """
        owner = node_of(channel)
        if owner is None:
            raise ValueError(f"{channel!r} is not a process-specific channel")
        if not isinstance(metadata, dict):
            raise TypeError("metadata must be a dict")
        try:
            text = json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata must be JSON-serializable: {exc}") from None
        if len(text) > MAX_METADATA_BYTES:
            raise ValueError(
                f"metadata is {len(text)} bytes of JSON; the limit is {MAX_METADATA_BYTES}"
            )
        # Through the writer, so it is ordered with this node's joins and re-asserts.
        written = self.registry.submit(self.calls.set_metadata(channel, owner, metadata))
        if owner != self.id or not (
            self.records.opened(channel) or self.subscriptions.groups_of(channel)
        ):
            found: int = await self._registry_wait(written)
            return bool(found)
        self.records.set_metadata(channel, text)  # before any await: re-asserts include it
        if not await self._registry_wait(written):
            self.records.mark_lost()  # Redis lost the channel's record: re-assert it
        return True

    async def group_send(self, group: str, data: bytes) -> int:
        """Publish a serialized message once to the group's channel; return nodes reached."""
        return await self.host_for(group).publish(self.keys.group_channel(group), data)

    async def _unsubscribe(self, groups: list[str]) -> None:
        for group in groups:
            if group not in self.subscriptions:  # it may have been re-joined meanwhile
                await self.host_for(group).subscriber.unwant([self.keys.group_channel(group)])

    async def _control(self, node_id: str, op: str, **fields: str) -> int:
        payload = self._codec.seal(node_id, {"op": op, **fields})
        return await self.host_for(node_id).publish(self.keys.node_channel(node_id), payload)

    async def _remote(self, node_id: str, op: str, **fields: str) -> bool:
        """Ask another node to apply ``op`` and wait for its confirmation.

        Returns whether that node has the channel: False without waiting when the node
        is not listening (it is gone).
        """
        await self._listen()  # the confirmation comes back on this node's channel
        request = uuid.uuid4().hex
        confirmed = self._acks[request] = asyncio.get_running_loop().create_future()
        try:
            if not await self._control(node_id, op, reply_to=self.id, request=request, **fields):
                return False
            async with asyncio.timeout(self.config.subscribe_timeout):
                found: bool = await confirmed
            return found
        except TimeoutError:
            raise RedisUnavailable(f"Node {node_id} did not confirm {op} in time") from None
        finally:
            self._acks.pop(request, None)

    async def _apply(self, op: dict[str, str]) -> None:
        """Carry out a control operation sent by another node, then confirm it."""
        kind, channel = op.get("op"), op.get("channel", "")
        ok, found = "1", "1" if channel in self.mailboxes else ""
        try:
            if kind == "group_add" and found:
                await self.group_add(op["group"], channel)
            elif kind == "group_discard":
                await self.group_discard(op["group"], channel)
            elif kind == "disconnect":
                await self.disconnect(channel)
        except Exception:
            ok = ""
            logger.exception("Could not apply %s for another node", kind)
        if op.get("reply_to"):
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._control(
                    op["reply_to"], "ack", request=op.get("request", ""), ok=ok, found=found
                )

    # -- incoming ----------------------------------------------------------------------

    def _on_message(self, pubsub_channel: bytes, data: bytes) -> None:
        if pubsub_channel == self._node_channel_bytes:
            self._on_direct(data)
        elif pubsub_channel.startswith(self._group_prefix):
            self._on_group(pubsub_channel[len(self._group_prefix) :].decode(), data)

    def _on_direct(self, payload: bytes) -> None:
        if payload.startswith(CONTROL_MARK):
            op = self._codec.open(payload, self.id)  # None: forged, replayed or malformed
            if op is not None:
                self._on_control(op)
            return
        channel_bytes, _, data = payload.partition(b"\n")
        channel = channel_bytes.decode()
        mailbox = self.mailboxes.get(channel)
        letter: Letter | None = None
        if mailbox is not None:
            try:
                letter = (time.monotonic() + self.config.expiry, self._decode(data), True, None)
            except Exception as exc:  # e.g. forged, or encrypted with a key this node lacks
                self._drops.drop("an undecodable message", f"for {channel}: {exc!r}")
        if letter is None or mailbox is None or not mailbox.put(letter):
            if mailbox is not None and letter is not None:
                self._drop(channel)  # full with local or group messages the counter missed
            self._release(channel)

    def _on_control(self, op: dict[str, str]) -> None:
        if op.get("op") == "ack":
            confirmed = self._acks.get(op.get("request", ""))
            if confirmed is not None and not confirmed.done():
                if op.get("ok"):
                    confirmed.set_result(bool(op.get("found")))
                else:
                    confirmed.set_exception(RedisUnavailable("The owning node could not apply it"))
        else:
            self._spawn(self._apply(op))

    def _on_group(self, group: str, data: bytes) -> None:
        members = self.subscriptions.members(group)
        if not members:
            return
        try:
            message = self._decode(data)
        except Exception as exc:
            self._drops.drop("an undecodable message", f"for group {group}: {exc!r}")
            return
        now = time.monotonic()
        letter: Letter = (now + self.config.expiry, message, False, _copier(message))
        mailboxes = self.mailboxes
        stale = []
        for channel, until in members.items():
            if until <= now:
                stale.append(channel)
            elif (mailbox := mailboxes.get(channel)) is not None:
                if not mailbox.put(letter):
                    self._drop(channel)
            else:  # a normal channel, or a local one not receiving yet
                self._spawn(self._forward(channel, data))
        if stale:
            for channel in stale:
                self.registry.submit_quietly(self.calls.leave(group, channel, self.id))
            emptied = [group for channel in stale if self.subscriptions.discard(group, channel)]
            self._spawn(self._unsubscribe(emptied))

    async def _forward(self, channel: str, data: bytes) -> None:
        try:
            await self.send(channel, data)
        except ChannelFull:
            self._drop(channel)
        except CONNECTION_ERRORS as exc:
            logger.warning("Could not forward a group message to %s: %s", channel, exc)

    def _drop(self, channel: str) -> None:
        """Count a message dropped because the channel is full, and warn (rate-limited)."""
        self.dropped += 1
        self._full.record(channel)

    # -- background --------------------------------------------------------------------

    def _release(self, channel: str) -> None:
        self._to_release[channel] += 1
        self._release_wanted.set()

    async def _release_loop(self) -> None:
        """Give back in-flight slots of received messages, batched into one pipeline."""
        # Checks `closed` as well as relying on cancellation: redis-py's pipeline can
        # swallow a CancelledError that lands inside execute().
        host = self.host_for(self.id)  # where senders count this node's channels
        while not self.closed:
            await self._release_wanted.wait()
            self._release_wanted.clear()
            batch, self._to_release = self._to_release, Counter()
            calls = [Call(scripts.RELEASE, [self.keys.inflight(channel)], [count], int)
                     for channel, count in batch.items()]  # fmt: skip
            try:
                await host.run_all(calls)
            except CONNECTION_ERRORS as exc:  # the counters expire by themselves
                raise_if_cancelled()
                logger.warning("Could not release in-flight counters: %s", exc)

    async def _heartbeat_loop(self) -> None:
        """Abandon idle channels, expire old memberships, refresh this node's record,
        reap dead nodes: every min(heartbeat_interval, group_expiry, expiry) seconds.
        """
        # Also the sweep's tick: an idle channel is abandoned at most one tick late.
        interval = min(self.config.heartbeat_interval, self.config.group_expiry, self.config.expiry)
        while not self.closed:
            await asyncio.sleep(interval)  # a timer, not a hot path
            now = time.monotonic()
            self._sweep(now)
            self._full.flush()
            expired = self.subscriptions.expire(now)
            for group, channel in expired:
                self.registry.submit_quietly(self.calls.leave(group, channel, self.id))
            emptied = [group for group, _ in expired if group not in self.subscriptions]
            calls: list[Call[Any]] = []
            if self._registered:
                calls.append(self.calls.heartbeat(self.id, self._started, len(self.mailboxes)))
            calls.append(self.calls.reap())
            try:
                if emptied:
                    await self._unsubscribe(sorted(set(emptied)))
                results = await self.registry.run_all(calls)
                for failure in results:
                    if isinstance(failure, Exception):
                        logger.warning("Heartbeat call failed: %s", failure)
                if self._registered and not isinstance(results[0], Exception):
                    await self._reassert_if_lost(generation_seen=bool(results[0]))
            except CONNECTION_ERRORS as exc:
                raise_if_cancelled()
                logger.warning("Heartbeat failed (%s); retrying in %.1fs", exc, interval)

    async def _registry_moved(self, address: tuple[str, int]) -> None:
        """The registry's master switched (Sentinel): re-assert this node's records there.

        Writes the old master took after the replica's promotion, or that had not reached
        the replica, are lost with it; the re-assert is idempotent and ordered.
        """
        if not self._registered:
            return
        logger.info("Registry master switched to %s: re-asserting node %s", address, self.id)
        self.records.mark_lost()
        await self._reassert_if_lost(True)

    def _loss_counters(self) -> tuple[int, int]:
        reconnects = sum(host.subscriber.reconnects for host in self._hosts)
        return reconnects, self.registry.failed_writes

    async def _reassert_if_lost(self, generation_seen: bool) -> None:
        reason = self.records.loss(generation_seen, *self._loss_counters())
        if reason is None:
            return
        logger.info("Re-asserting node %s's registry records: %s", self.id, reason)
        try:
            await self.reassert()
        except Exception as exc:  # the next heartbeat tries again
            raise_if_cancelled()
            logger.warning("Could not re-assert the registry records (%s)", exc)

    async def reassert(self) -> None:
        """Rewrite this node's records in the registry from its memory (idempotent).

        Its node record, every channel record with its groups, join times and metadata,
        the group member sets, its count in each group and the room indexes end up as
        this node's joins, opens and metadata calls would have left them, and records
        Redis holds for this node beyond those are removed. Ordered with the node's other
        registry writes. Raises :class:`RedisUnavailable` when Redis does not confirm it
        within ``subscribe_timeout``, or the error of a step that failed; either way the
        next heartbeat tries again.
        """
        calls = self.records.reassert_calls(
            self.subscriptions, len(self.mailboxes), self._started, *self._loss_counters()
        )
        self._registered = True
        writes = [self.registry.submit(call) for call in calls]
        try:
            results = await self._registry_wait(asyncio.gather(*writes, return_exceptions=True))
        except BaseException:
            self.records.mark_lost()
            raise
        for result in results:
            if isinstance(result, BaseException):
                self.records.mark_lost()
                raise result

    async def _registry_wait(self, write: asyncio.Future[T]) -> T:
        """Wait for a submitted registry write, bounded like a subscription."""
        try:
            async with asyncio.timeout(self.config.subscribe_timeout):
                return await write
        except TimeoutError:
            raise RedisUnavailable("The registry write was not confirmed in time") from None

    async def ping(self) -> None:
        """PING every host (raises redis-py's ConnectionError when one is down)."""
        for host in self._hosts:
            await retry.call(host.client.ping, idempotent=True, what="PING")

    async def flush_keys(self) -> None:
        """Delete every key of this prefix on every host (SCAN, never KEYS; idempotent)."""
        for host in self._hosts:
            flush = functools.partial(self._flush_host, host)
            await retry.call(flush, idempotent=True, what="flush")

    async def _flush_host(self, host: Host) -> None:
        for pattern in self.keys.patterns():
            batch = [key async for key in host.client.scan_iter(match=pattern, count=1000)]
            if batch:
                await host.client.unlink(*batch)

    async def close_pools(self) -> None:
        """Close the command connections of every host; they reopen on next use."""
        for host in self._hosts:
            await host.close_pools()

    async def close(self) -> None:
        """Cancel and await every task, close every connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._release_wanted.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._registered:  # a clean shutdown removes this node's records at once
            try:
                async with asyncio.timeout(self.config.subscribe_timeout):
                    # Through the writer: after every join or open still queued.
                    await self.registry.submit(self.calls.reap([self.id]))
            except Exception as exc:  # best effort: the TTL reaps it otherwise
                logger.warning("Could not remove this node's records at close: %s", exc)
        for host in self._hosts:
            await host.close()


def channel_send_call(
    keys: Keys, config: LayerConfig, channel: str, data: bytes
) -> tuple[str, Call[int]]:
    """The script that sends ``data`` to a channel through Redis, and the name to shard by.

    A normal channel is a Redis list (PUSH); a process-specific one is published to its
    owning node after the in-flight count is checked (SEND_TO_NODE). The call's result
    is the number of nodes reached (1 for a queued message); it raises ChannelFull.
    """
    capacity, expiry_ms = config.capacity_for(channel), int(config.expiry * 1000)
    owner = node_of(channel)
    if owner is None:
        stamped = b"%013d" % int(time.time() * 1000) + data
        args = [capacity, expiry_ms, stamped[:13], stamped]
        return channel, Call(scripts.PUSH, [keys.queue(channel)], args, _full_if(0, channel))
    payload = channel.encode() + b"\n" + data
    args = [capacity, expiry_ms, keys.node_channel(owner), payload]
    return owner, Call(scripts.SEND_TO_NODE, [keys.inflight(channel)], args, _full_if(-1, channel))


def _full_if(full: int, channel: str) -> Callable[[Any], int]:
    def parse(reply: Any) -> int:
        if int(reply) == full:
            raise ChannelFull(channel)
        return int(reply)

    return parse


async def _both(first: Awaitable[Any], second: Awaitable[Any]) -> None:
    """Run two awaitables concurrently, wait for both, re-raise the first failure."""
    results = await asyncio.gather(first, second, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
