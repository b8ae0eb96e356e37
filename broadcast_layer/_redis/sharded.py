"""Sharded pub/sub on Redis Cluster: ``SSUBSCRIBE`` at the master that owns each channel.

:class:`ShardedSubscriber` keeps one connection per master that owns at least one of
the wanted channels' slots (a :class:`_Shard`), and owns the reconciliation redis-py
8.1 lacks: when a reshard or a failover moves a slot, the old owner pushes
``sunsubscribe`` and forgets the channel (``tests/test_cluster_pubsub_server.py``). On
that push, on a ``MOVED`` reply, on a lost connection, and every ``reconcile_interval``
as a safety net, it re-reads the slot map and subscribes at the new owner, with backoff,
without the caller seeing an error. Pub/sub is at most once: messages published while a
channel is between owners are lost, never duplicated or reordered.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisClusterException, ResponseError

from ..exceptions import RedisUnavailable
from . import retry
from .clients import pass_pushes_through
from .errors import CONNECTION_ERRORS
from .retry import DEFAULT_BACKOFF, Backoff, Retrying, raise_if_cancelled

logger = logging.getLogger(__name__)

Address = tuple[str, int]
#: As the classic subscriber's: returns None or back-pressure to await before reading on.
MessageHandler = Callable[[bytes, bytes], Awaitable[None] | None]
#: Called on a reader with a wanted channel each time its master acknowledges it.
AckHandler = Callable[[bytes], None]
_SSUBSCRIBE, _SUNSUBSCRIBE, _SMESSAGE = b"ssubscribe", b"sunsubscribe", b"smessage"


class _Owner(Protocol):
    """What a shard tells the subscriber that owns it."""

    def shard_message(
        self, shard: _Shard, channel: bytes, data: bytes
    ) -> Awaitable[None] | None: ...
    def shard_acked(self, shard: _Shard, channel: bytes) -> None: ...
    def shard_trouble(self, shard: _Shard, reason: str) -> None: ...
    def shard_link(self, shard: _Shard, up: bool) -> None: ...


class ShardState(enum.Enum):
    """Lifecycle of one master's connection (and, as :attr:`ShardedSubscriber.state`, of
    them all: idle before any, connecting while one is)."""

    IDLE = "idle"
    CONNECTING = "connecting"  # (re)connecting, or waiting out a backoff
    CONNECTED = "connected"  # reading; SSUBSCRIBE sent for every assigned channel
    CLOSED = "closed"


def _by_slot(channels: Iterable[bytes]) -> list[list[bytes]]:
    """Group channels by hash slot: one SSUBSCRIBE may not name two slots (CROSSSLOT)."""
    groups: dict[int, list[bytes]] = {}
    for channel in sorted(channels):
        groups.setdefault(key_slot(channel), []).append(channel)
    return list(groups.values())


class _Shard:
    """One master's sharded pub/sub connection, subscribed to the channels assigned to it.

    Replies are matched to commands in order: Redis answers each channel of an
    ``SSUBSCRIBE``/``SUNSUBSCRIBE`` in turn, or the whole command with one error. A
    ``sunsubscribe`` that answers nothing we sent is the server dropping the channel.
    """

    def __init__(self, address: Address, connection: Any, owner: _Owner, backoff: Backoff):
        self.address = address
        self.channels: set[bytes] = set()  # assigned here: wanted subscribed on this master
        self.acked: set[bytes] = set()  # Redis confirmed on the current connection
        self.state = ShardState.CONNECTING
        self._conn = connection
        self._owner = owner
        self._backoff = backoff
        self._pending: set[bytes] = set()  # SSUBSCRIBE sent, not answered yet
        self._linked = False  # told the owner this connection is up and subscribed
        self._asked_at = 0.0  # when the oldest unanswered SSUBSCRIBE was sent
        self._sent: deque[tuple[int, bytes, bytes]] = deque()  # (command no, kind, channel)
        self._commands = 0
        self._lock = asyncio.Lock()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"broadcast_layer.sharded[{address[0]}:{address[1]}]"
        )

    async def add(self, channels: Iterable[bytes]) -> None:
        """Assign channels here and SSUBSCRIBE to those not subscribed or asked for yet."""
        self.channels.update(channels)
        await self.resubscribe()

    async def resubscribe(self) -> None:
        """SSUBSCRIBE every assigned channel that is neither acknowledged nor in flight."""
        await self._send(_SSUBSCRIBE, ())

    async def remove(self, channels: Iterable[bytes]) -> None:
        """Unassign channels and SUNSUBSCRIBE from them."""
        gone = self.channels.intersection(channels)
        self.channels -= gone
        self.acked -= gone
        if gone:
            await self._send(_SUNSUBSCRIBE, gone)

    async def _send(self, kind: bytes, channels: Iterable[bytes]) -> None:
        async with self._lock:
            if self.state is not ShardState.CONNECTED:
                return  # the (re)connect subscribes to every assigned channel
            if kind == _SSUBSCRIBE:  # decided under the lock, so nothing is asked twice
                channels = self.channels - self.acked - self._pending
            try:
                for group in _by_slot(channels):
                    self._commands += 1
                    self._sent.extend((self._commands, kind, channel) for channel in group)
                    if kind == _SSUBSCRIBE:
                        if not self._pending:
                            self._asked_at = time.monotonic()
                        self._pending.update(group)
                    # check_health=False: a PING would read the socket the reader blocks on.
                    await self._conn.send_command(kind.decode(), *group, check_health=False)
            except CONNECTION_ERRORS:
                logger.debug("sharded pub/sub write failed; the reader reconnects")

    async def _run(self) -> None:
        retrying = Retrying(self._backoff)
        while self.state is not ShardState.CLOSED:
            try:
                await self._conn.connect()
                raise_if_cancelled()  # redis-py may swallow a cancellation while connecting
                self._sent.clear()
                self._pending.clear()
                self.acked.clear()
                self.state = ShardState.CONNECTED
                await self.resubscribe()
                self._check_linked()
                retrying.reset()
                await self._read_forever()
            except Exception as exc:  # any failure: reconnect rather than lose the channels
                raise_if_cancelled()
                self.state = ShardState.CONNECTING
                self.acked.clear()
                self._linked = False
                self._owner.shard_link(self, False)
                delay = retrying.next_delay()
                logger.warning("Sharded pub/sub to %s:%s lost (%s); retrying in %.2fs",
                               *self.address, exc, delay)  # fmt: skip
                # The master may be gone for good (a failover): the owner re-reads the map.
                self._owner.shard_trouble(self, f"connection lost: {exc}")
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await self._conn.disconnect()
                await asyncio.sleep(delay)  # backoff between reconnects, not a poll

    async def _read_forever(self) -> None:
        read = self._conn.read_response
        while self.state is ShardState.CONNECTED:
            try:
                reply = await read(timeout=math.inf, disable_decoding=True, push_request=True)
            except ResponseError as exc:
                self._refused(exc)
                continue
            kind = reply[0]
            if kind == _SMESSAGE:
                pause = self._owner.shard_message(self, reply[1], reply[2])
                if pause is not None:
                    await self._wait(pause)
            elif kind in (_SSUBSCRIBE, _SUNSUBSCRIBE):
                self._answer(kind, reply[1])

    @staticmethod
    async def _wait(pause: Awaitable[None]) -> None:
        """Stop reading this master until the handler's back-pressure is over."""
        try:
            await pause
        except Exception:  # one bad message must not stop the reader
            logger.exception("Dropped a sharded pub/sub message that could not be handled")

    def _answer(self, kind: bytes, channel: bytes) -> None:
        if self._sent and self._sent[0][1:] == (kind, channel):
            self._sent.popleft()
            if kind == _SSUBSCRIBE:
                self._pending.discard(channel)
                if channel in self.channels:
                    self.acked.add(channel)
                    self._owner.shard_acked(self, channel)
                self._check_linked()
            return
        if kind == _SUNSUBSCRIBE and channel in self.channels:
            # Not an answer: the server dropped the channel (its slot moved away).
            self.acked.discard(channel)
            self._owner.shard_trouble(self, f"server sunsubscribed {channel!r}")

    def stuck(self, seconds: float) -> bool:
        """Whether an SSUBSCRIBE on the current connection has waited ``seconds`` for an
        answer (seen once after the connections of every master were killed at once)."""
        return (self.state is ShardState.CONNECTED and bool(self._pending)
                and time.monotonic() - self._asked_at > seconds)  # fmt: skip

    async def restart(self) -> None:
        """Drop the connection: the reader reconnects and subscribes to everything again."""
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self._conn.disconnect()

    def _check_linked(self) -> None:
        """Tell the owner the connection is back once it is resubscribed (like the classic
        subscriber: "restored" means a publish issued now reaches this node)."""
        if not self._linked and self.state is ShardState.CONNECTED and not self._pending:
            self._linked = True
            self._owner.shard_link(self, True)

    def _refused(self, exc: ResponseError) -> None:
        """An error answers the whole command at the head of the queue."""
        if not self._sent:
            logger.warning("Unexpected error on sharded pub/sub: %s", exc)
            return
        number = self._sent[0][0]
        while self._sent and self._sent[0][0] == number:
            _, _, channel = self._sent.popleft()
            self._pending.discard(channel)
        reason = "MOVED" if isinstance(exc, MovedError) else f"refused: {exc}"
        self._owner.shard_trouble(self, reason)
        self._check_linked()

    async def close(self) -> None:
        """Stop the reader and close the connection (idempotent)."""
        self.state = ShardState.CLOSED
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self._conn.disconnect()


class ShardedSubscriber:
    """Sharded subscriptions on a cluster that follow reshards and failovers by themselves.

    ``on_message(channel, data)`` is called for each message, from the reader of the
    master that the slot map names as the channel's owner (a message from a master that
    no longer owns it is dropped, so a move never duplicates).
    """

    def __init__(
        self,
        cluster: RedisCluster,
        on_message: MessageHandler,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        reconcile_interval: float = 5.0,
        on_connection: Callable[[bool], None] | None = None,
        on_acknowledged: AckHandler | None = None,
    ) -> None:
        """``on_connection(lost)``: called when the first master's connection is lost
        (True) and when every lost one is back (False), like the classic subscriber's.

        ``on_acknowledged(channel)``: called each time a channel's master acknowledges
        it, on that master's reader before any later message of the channel: the first
        SSUBSCRIBE, and again after its connection was lost or the channel moved (what
        was published meanwhile did not reach this node). Per master, unlike
        ``on_connection``, which waits for every master.
        """
        self._cluster = cluster
        self._on_message = on_message
        self._on_connection = on_connection
        self._on_acknowledged = on_acknowledged
        self._down: set[Address] = set()
        self._backoff = backoff
        self._interval = reconcile_interval
        self._wanted: set[bytes] = set()
        self._assigned: dict[bytes, Address] = {}
        self._shards: dict[Address, _Shard] = {}
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._lock = asyncio.Lock()  # one placement at a time
        self._dirty = asyncio.Event()
        self._stale = False  # the slot map must be re-read before the next placement
        self._retrying = Retrying(backoff)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.refreshes = 0  # slot map re-reads after a sign of a move (for tests and stats)
        #: Signs that a master lost or dropped subscriptions (a lost connection, a
        #: sunsubscribe push, MOVED): like a classic subscriber's reconnects, each one
        #: means that master may have lost this node's records too (a failover).
        self.reconnects = 0

    def _want(self, channels: Iterable[str | bytes]) -> set[bytes]:
        if self._closed:
            raise RedisUnavailable("the sharded subscriber is closed")
        wanted = {_bytes(c) for c in channels}
        self._wanted |= wanted
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._reconcile_loop(), name="broadcast_layer.sharded-reconciler"
            )
        return wanted

    async def want(self, channels: Iterable[str]) -> None:
        """Want ``channels`` and SSUBSCRIBE at their owners (does not wait for the answer).

        A cluster that cannot be reached now is left to the reconciler.
        """
        self._want(channels)
        try:
            await self._place()
        except (RedisClusterException, *CONNECTION_ERRORS) as exc:
            raise_if_cancelled()
            logger.warning("Sharded subscribe deferred (%s); the reconciler retries", exc)
            self._stale = True
            self._dirty.set()

    async def unwant(self, channels: Iterable[str]) -> None:
        """Stop wanting ``channels`` (the classic subscriber's name for :meth:`unsubscribe`)."""
        await self.unsubscribe(channels)

    async def wait_subscribed(self, channel: str, timeout: float) -> None:
        """Wait until the channel's owner acknowledged it; RedisUnavailable after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self._acknowledged(_bytes(channel))
        except TimeoutError:
            raise RedisUnavailable(
                f"no SSUBSCRIBE acknowledgement within {timeout}s for {channel!r}"
            ) from None

    async def close_if_unused(self) -> None:
        """Nothing to do: a master's connection closes once it has no wanted channel."""

    async def subscribe(self, channels: Iterable[str | bytes], timeout: float = 10.0) -> None:
        """Want ``channels`` and return once every one is acknowledged by its owner.

        Raises :class:`RedisUnavailable` if that takes longer than ``timeout``; the
        channels stay wanted (the reconciler keeps trying) until :meth:`unsubscribe`.
        """
        wanted = self._want(channels)
        try:
            async with asyncio.timeout(timeout):
                await self._place()
                await asyncio.gather(*(self._acknowledged(c) for c in wanted))
        except TimeoutError:
            missing = sorted(c for c in wanted if not self.acknowledged(c))
            raise RedisUnavailable(f"no SSUBSCRIBE acknowledgement within {timeout}s for "
                                   f"{missing!r}") from None  # fmt: skip
        except (RedisClusterException, *CONNECTION_ERRORS) as exc:
            raise RedisUnavailable(f"Redis Cluster is unreachable: {exc}") from exc

    async def unsubscribe(self, channels: Iterable[str | bytes]) -> None:
        """Stop wanting ``channels`` and SUNSUBSCRIBE from them (does not wait)."""
        gone = {_bytes(c) for c in channels} & self._wanted
        self._wanted -= gone
        async with self._lock:
            for channel in gone:
                address = self._assigned.pop(channel, None)
                if address in self._shards:
                    await self._shards[address].remove([channel])
            await self._close_empty()

    def acknowledged(self, channel: str | bytes) -> bool:
        """True when the channel's current owner has confirmed the subscription."""
        channel = _bytes(channel)
        shard = self._shards.get(self._assigned.get(channel, ("", 0)))
        return shard is not None and channel in shard.acked

    @property
    def state(self) -> ShardState:
        """CLOSED, CONNECTING while a master's connection is (re)connecting, CONNECTED
        when every one is up, IDLE before any."""
        if self._closed:
            return ShardState.CLOSED
        if not self._shards:
            return ShardState.IDLE
        if any(shard.state is not ShardState.CONNECTED for shard in self._shards.values()):
            return ShardState.CONNECTING
        return ShardState.CONNECTED

    @property
    def masters(self) -> frozenset[Address]:
        """The masters this subscriber holds a connection to."""
        return frozenset(self._shards)

    async def _acknowledged(self, channel: bytes) -> None:
        if self.acknowledged(channel):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters.get(channel, ()):
                self._waiters[channel].remove(waiter)

    # -- what the shards report ------------------------------------------------------------

    def shard_message(self, shard: _Shard, channel: bytes, data: bytes) -> Awaitable[None] | None:
        if self._assigned.get(channel) != shard.address:
            return None  # a master that lost the slot: the new owner delivers (no duplicates)
        try:
            return self._on_message(channel, data)
        except Exception:  # one bad message must not stop the reader
            logger.exception("Dropped a sharded pub/sub message that could not be handled")
            return None

    def shard_acked(self, shard: _Shard, channel: bytes) -> None:
        if self._assigned.get(channel) != shard.address:
            return
        self._retrying.reset()
        for waiter in self._waiters.pop(channel, ()):
            if not waiter.done():
                waiter.set_result(None)
        if self._on_acknowledged is not None:
            try:
                self._on_acknowledged(channel)
            except Exception:  # a listener's failure must not stop the reader
                logger.exception("A sharded subscription listener failed")

    def shard_link(self, shard: _Shard, up: bool) -> None:
        was_lost = bool(self._down)
        if up:
            self._down.discard(shard.address)
        else:
            self._down.add(shard.address)
        if self._on_connection is not None and was_lost != bool(self._down):
            try:
                self._on_connection(bool(self._down))
            except Exception:  # a listener's failure must not stop the reader
                logger.exception("A pub/sub connection listener failed")

    def shard_trouble(self, shard: _Shard, reason: str) -> None:
        self.reconnects += 1
        logger.info("Sharded pub/sub at %s:%s: %s; re-reading the slot map", *shard.address,
                    reason)  # fmt: skip
        self._stale = True
        self._dirty.set()

    # -- reconciliation --------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while not self._closed:
            try:
                async with asyncio.timeout(self._interval):
                    await self._dirty.wait()
                trouble = True
            except TimeoutError:
                trouble = False  # the periodic safety net: re-read the map all the same
                self._stale = True
            self._dirty.clear()
            if trouble:  # several signs in a row: wait longer each time (reset by an ack)
                await asyncio.sleep(self._retrying.next_delay())
            try:
                await self._place()
            except Exception as exc:  # a cluster that cannot answer now: try again later
                raise_if_cancelled()
                logger.warning("Sharded pub/sub reconciliation failed (%s); retrying", exc)
                self._stale = True
                self._dirty.set()

    async def _place(self) -> None:
        """Assign every wanted channel to its slot's owner, moving channels whose owner
        changed, and resend what the owner has not acknowledged."""
        async with self._lock:
            await self._cluster.initialize()  # once; later calls return at once
            if self._stale:
                self._stale = False
                self.refreshes += 1
                await self._cluster.nodes_manager.initialize()
            moves: dict[Address, list[bytes]] = {}
            for channel in self._wanted:
                node = self._cluster.get_node_from_key(channel)  # type: ignore[arg-type]
                if node is None:
                    continue
                address = (node.host, int(node.port))
                old = self._assigned.get(channel)
                if old != address:
                    moves.setdefault(address, []).append(channel)
                    self._assigned[channel] = address
                    if old in self._shards:
                        await self._shards[old].remove([channel])
            for address, channels in moves.items():
                await self._shard(address).add(channels)
            for shard in self._shards.values():
                if shard.stuck(self._interval):  # a safety net: answers never came
                    logger.warning("Sharded pub/sub to %s:%s: no SSUBSCRIBE answer for %ss; "
                                   "reconnecting", *shard.address, self._interval)  # fmt: skip
                    await shard.restart()
                else:
                    await shard.resubscribe()
            await self._close_empty()

    def _shard(self, address: Address) -> _Shard:
        shard = self._shards.get(address)
        if shard is None:
            node = self._cluster.get_node(host=address[0], port=address[1])
            if node is None:
                raise RedisClusterException(f"{address} is not in the slot map")
            connection = node.connection_class(**node.connection_kwargs)
            pass_pushes_through(connection)
            shard = self._shards[address] = _Shard(address, connection, self, self._backoff)
        return shard

    async def _close_empty(self) -> None:
        for address, shard in list(self._shards.items()):
            if not shard.channels:
                del self._shards[address]
                await shard.close()
                self.shard_link(shard, True)  # a master left behind is no longer missed

    async def close(self) -> None:
        """Stop reconciling, close every connection, cancel waiters (idempotent)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._lock:
            shards, self._shards = list(self._shards.values()), {}
            for shard in shards:
                await shard.close()
        self._down.clear()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.cancel()
        self._waiters.clear()


async def spublish(cluster: RedisCluster, channel: str | bytes, data: bytes) -> int:
    """``SPUBLISH`` at the channel's slot owner; return how many subscribers got it.

    redis-py's cluster client sends it to the owner in its slot map and follows a
    ``MOVED`` reply (the stale owner did not run it, so the message is not doubled).
    Other failures are retried by ``retry.py`` as a non-idempotent call: only when the
    command was never sent, or refused unexecuted (a cluster between owners), never
    after a connection dropped with it in flight (with ``make_cluster_client``'s
    client, whose own retries are off).
    """
    send = functools.partial(cluster.spublish, channel, data)
    return int(await retry.call(send, idempotent=False, what="SPUBLISH"))


def _bytes(channel: str | bytes) -> bytes:
    return channel.encode() if isinstance(channel, str) else channel
