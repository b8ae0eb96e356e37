"""Redis connections for one host on one event loop: a command client and a pub/sub reader.

Command connections are *guarded* (:func:`guard_pool`): a command is never written
on a connection the server has already closed (the connection reconnects first), and
a failure to connect is a :class:`~broadcast_layer.retry.NotSent`, so the retry
policy in ``retry.py`` knows the command can be sent again safely.

The :class:`Subscriber` owns one dedicated connection and one reader task that
blocks on the socket. It keeps Redis's subscriptions equal to a wanted set,
tells callers when a SUBSCRIBE is acknowledged, and after a dropped connection
reconnects with backoff and subscribes to everything wanted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import math
import select
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import redis
import redis.connection
import redis.sentinel
from channels_redis.utils import create_pool
from redis import asyncio as aioredis
from redis.asyncio.connection import AbstractConnection as AsyncAbstractConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import AuthenticationError, AuthorizationError, NoScriptError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from . import retry
from .exceptions import RedisUnavailable
from .pools import PoolLimits, make_waiting
from .retry import CONNECTION_ERRORS, NotSent, Retrying, raise_if_cancelled
from .scripts import Call
from .sentinel import MasterWatch, SwitchListener, is_sentinel, master_pool

T = TypeVar("T")

logger = logging.getLogger(__name__)

MessageHandler = Callable[[bytes, bytes], None]
DEFAULT_LIMITS = PoolLimits()
_NOT_RETRYABLE = (AuthenticationError, AuthorizationError, NotSent)


@contextlib.contextmanager
def _not_sent(what: str) -> Iterator[None]:
    """Connection errors inside become :class:`NotSent`: the command was never written."""
    try:
        yield
    except _NOT_RETRYABLE:
        raise
    except CONNECTION_ERRORS as exc:
        raise NotSent(f"{what}: {exc}") from exc


_REDIS_SOCKET_TIMEOUT: float | None
try:  # redis-py >= 6 applies a default socket_timeout that is not in connection_kwargs
    from redis._defaults import DEFAULT_SOCKET_TIMEOUT as _REDIS_SOCKET_TIMEOUT
except ImportError:  # pragma: no cover - older redis-py: no default timeout
    _REDIS_SOCKET_TIMEOUT = None


def blocking_timeout(client: aioredis.Redis, longest: float = 5.0) -> float:
    """Seconds a blocking command may wait in Redis without tripping ``socket_timeout``."""
    kwargs = client.connection_pool.connection_kwargs
    socket_timeout = kwargs.get("socket_timeout", _REDIS_SOCKET_TIMEOUT)
    if not socket_timeout:
        return longest
    return max(0.05, min(longest, float(socket_timeout) / 2))


def _readiness_check(fd: int) -> Callable[[], bool]:
    """A check, without waiting, for unread data or EOF in the kernel for socket ``fd``."""
    if hasattr(select, "poll"):  # select() cannot take descriptors above FD_SETSIZE
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return lambda: bool(poller.poll(0))
    return lambda: bool(select.select([fd], [], [], 0)[0])  # pragma: no cover - Windows


class _AsyncGuard(AsyncAbstractConnection):
    """Mixin for asyncio command connections: never write on a dead idle connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # redis-py's Retry resends a command after any connection error, even when Redis
        # already ran it: a PUBLISH could arrive twice. Retries belong to retry.py.
        self.retry = AsyncRetry(NoBackoff(), 0)
        self._handshaking = False
        self._checked_writer: Any = None  # the socket _readable was made for
        self._readable: Callable[[], bool] = bool

    async def connect(self) -> None:
        self._handshaking = True  # the handshake sends several commands before reading
        try:
            with _not_sent("Could not connect to Redis"):
                await super().connect()  # type: ignore[no-untyped-call]
        finally:
            self._handshaking = False

    def _closed_by_peer(self) -> bool:
        """Whether the server closed this idle connection (or it holds stray data).

        redis-py's own check before handing out a pooled connection is skipped in
        redis-py 8 when maintenance notifications are on (the default with RESP3), and
        it only sees an EOF the event loop has already read; a FIN still in the kernel
        is found by polling the socket (one syscall). Reads redis-py's private
        ``_reader``/``_writer``: it has no public accessor for them.
        """
        reader, writer = getattr(self, "_reader", None), getattr(self, "_writer", None)
        if reader is None or writer is None:
            return False
        if reader.at_eof() or writer.transport.is_closing():
            return True
        if writer is not self._checked_writer:  # connected anew since the last check
            sock = writer.transport.get_extra_info("socket")
            self._readable = _readiness_check(sock.fileno()) if sock is not None else bool
            self._checked_writer = writer
        return self._readable()

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self.is_connected and not self._handshaking and self._closed_by_peer():
            logger.debug("Pooled connection closed by the server while idle; reconnecting")
            await self.disconnect(nowait=True)
        if not self.is_connected:
            await self.connect()
        if check_health:
            with _not_sent("Health check before the command failed"):
                await self.check_health()  # type: ignore[no-untyped-call]
        await super().send_packed_command(command, check_health=False)


class _SyncGuard(redis.connection.AbstractConnection):
    """Mixin for blocking command connections: connection failures before sending are NotSent.

    redis-py's blocking pool already reconnects a pooled connection the server closed
    (its ``can_read()`` raises on EOF before the command is written).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry = SyncRetry(NoBackoff(), 0)  # see _AsyncGuard

    def connect(self) -> None:
        with _not_sent("Could not connect to Redis"):
            super().connect()  # type: ignore[no-untyped-call]

    def check_health(self) -> None:
        with _not_sent("Health check before the command failed"):
            super().check_health()  # type: ignore[no-untyped-call]


@functools.cache
def _guarded(cls: type, mixin: type) -> type:
    return type(f"Guarded{cls.__name__}", (mixin, cls), {})


def guard_pool(pool: Any) -> Any:
    """Make ``pool`` (asyncio or blocking) hand out guarded command connections."""
    mixin = _AsyncGuard if isinstance(pool, aioredis.ConnectionPool) else _SyncGuard
    if not issubclass(pool.connection_class, mixin):
        pool.connection_class = _guarded(pool.connection_class, mixin)
    return pool


def make_pool(host: dict[str, Any], watch: MasterWatch | None = None) -> Any:
    """A redis-py asyncio pool for one ``hosts`` entry; a Sentinel one follows ``watch``."""
    return create_pool(host) if watch is None else master_pool(host, watch)


def make_client(
    host: dict[str, Any], watch: MasterWatch | None = None, limits: PoolLimits = DEFAULT_LIMITS
) -> aioredis.Redis:
    """A redis-py asyncio client for one ``hosts`` entry (URL, dict or Sentinel), guarded.

    Its pool waits for a free connection (:func:`~broadcast_layer.pools.make_waiting`).
    """
    pool = make_waiting(make_pool(host, watch), host, limits)
    return aioredis.Redis(connection_pool=guard_pool(pool))


async def close_pool(pool: Any) -> None:
    """Disconnect a pool, and for Sentinel its connections to the sentinels too."""
    await pool.disconnect()
    manager = getattr(pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


async def close_client(client: aioredis.Redis) -> None:
    """Close a client made by :func:`make_client` and everything its pool opened."""
    await client.aclose(close_connection_pool=False)
    await close_pool(client.connection_pool)


def make_sync_client(host: dict[str, Any], limits: PoolLimits = DEFAULT_LIMITS) -> redis.Redis:
    """A redis-py synchronous client for one ``hosts`` entry (URL, dict or Sentinel), guarded.

    Its pool waits for a free connection (:func:`~broadcast_layer.pools.make_waiting`).
    """
    spec = host
    host = dict(host)
    if "address" in host:
        client = redis.Redis.from_url(host.pop("address"), **host)
    elif "master_name" in host:
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            host.pop("sentinels"), sentinel_kwargs=host.pop("sentinel_kwargs", None)
        )
        client = sentinel.master_for(host.pop("master_name"), **host)  # type: ignore[no-untyped-call]
    else:
        client = redis.Redis(**host)
    guard_pool(make_waiting(client.connection_pool, spec, limits))
    return client


@contextlib.contextmanager
def sync_redis_errors() -> Iterator[None]:
    """The synchronous twin of the layer's error boundary: connection errors -> RedisUnavailable."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise retry.unavailable(exc) from exc


class SyncHost:
    """A synchronous client to one host, with its scripts registered once (thread-safe)."""

    def __init__(self, spec: dict[str, Any], limits: PoolLimits = DEFAULT_LIMITS) -> None:
        self.client = make_sync_client(spec, limits)
        self._scripts: dict[str, Any] = {}

    def run(self, call: Call[T]) -> T:
        """Run one script call, retried as retry.py allows; errors become RedisUnavailable."""
        script = self._scripts.get(call.script)
        if script is None:
            script = self._scripts[call.script] = self.client.register_script(call.script)
        run = functools.partial(script, keys=list(call.keys), args=list(call.args))
        with sync_redis_errors():
            reply = retry.call_sync(run, idempotent=call.idempotent, what="EVALSHA")
        return call.parse(reply)

    def publish(self, channel: str, data: bytes) -> int:
        """PUBLISH (retried only when it was not sent); return how many subscribers got it."""
        with sync_redis_errors():
            return int(
                retry.call_sync(
                    functools.partial(self.client.publish, channel, data),
                    idempotent=False,
                    what="PUBLISH",
                )
            )

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()


class State(enum.Enum):
    """Lifecycle of a :class:`Subscriber`."""

    IDLE = "idle"  # created, reader not started
    CONNECTING = "connecting"  # (re)connecting, or waiting out a backoff
    CONNECTED = "connected"  # reading; subscriptions match the wanted set
    CLOSED = "closed"  # closed for good


class Subscriber:
    """A pub/sub connection whose subscriptions follow :meth:`want` / :meth:`unwant`.

    Acknowledgements are matched by sequence number: Redis answers the channels of
    SUBSCRIBE/UNSUBSCRIBE commands one by one and in order, so the n-th answer on a
    connection is for the n-th channel we asked about. A waiter for a channel is
    released when the answer to the *latest* command about that channel arrives.
    """

    def __init__(
        self,
        host: dict[str, Any],
        on_message: MessageHandler,
        backoff: retry.Backoff = retry.DEFAULT_BACKOFF,
        pool: Any = None,
    ) -> None:
        self._pool = create_pool(host) if pool is None else pool
        self._on_message = on_message
        self._backoff = backoff
        self.state = State.IDLE
        self.reconnects = 0
        self._wanted: set[str] = set()
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._asked = 0  # channels asked about on this connection
        self._answered = 0  # answers received on this connection
        self._last_ask: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def start(self) -> None:
        """Start the reader task (idempotent)."""
        if self._task is None and self.state is not State.CLOSED:
            self.state = State.CONNECTING
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="broadcast_layer.subscriber"
            )

    async def want(self, channels: Iterable[str]) -> None:
        """Add channels to the wanted set and SUBSCRIBE to the new ones (does not wait)."""
        new = [c for c in channels if c not in self._wanted]
        self._wanted.update(new)
        self.start()
        await self._ask("SUBSCRIBE", new)

    async def unwant(self, channels: Iterable[str]) -> None:
        """Remove channels from the wanted set and UNSUBSCRIBE from them."""
        gone = [c for c in channels if c in self._wanted]
        self._wanted.difference_update(gone)
        await self._ask("UNSUBSCRIBE", gone)

    def acknowledged(self, channel: str) -> bool:
        """True when Redis has answered the latest command about ``channel``."""
        return self.state is State.CONNECTED and self._last_ask.get(channel, 0) <= self._answered

    async def wait_subscribed(self, channel: str, timeout: float) -> None:
        """Return once Redis acknowledged the latest command about ``channel``.

        Raises :class:`RedisUnavailable` when no acknowledgement arrives in ``timeout``.
        """
        if self.acknowledged(channel):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise RedisUnavailable(
                f"Redis did not acknowledge SUBSCRIBE {channel} within {timeout}s"
            ) from None
        finally:
            waiters = self._waiters.get(channel)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[channel]

    @property
    def subscribed(self) -> frozenset[str]:
        """The channels this subscriber wants (Redis matches it while connected)."""
        return frozenset(self._wanted)

    async def _ask(self, command: str, channels: list[str]) -> None:
        if not channels:
            return
        async with self._lock:
            if self.state is not State.CONNECTED:
                return  # the (re)connect subscribes to the whole wanted set
            for channel in channels:
                self._asked += 1
                self._last_ask[channel] = self._asked
            try:
                # check_health=False: a health-check PING would read the socket the
                # reader task is blocked on.
                await self._conn.send_command(command, *channels, check_health=False)
            except CONNECTION_ERRORS:
                # The reader sees the same failure and reconnects; the resubscribe
                # covers these channels.
                logger.debug("pub/sub write failed; the reader reconnects")

    async def _run(self) -> None:
        retrying = Retrying(self._backoff)
        while self.state is not State.CLOSED:  # not only cancellation: see Node._release_loop
            try:
                await self._connect()
                # redis-py's send (asyncio.wait_for on Python 3.11) can swallow a
                # cancellation; the read below would then block for ever.
                raise_if_cancelled()
                retrying.reset()
                await self._read_forever()
            except Exception as exc:  # any failure: reconnect rather than lose every group
                raise_if_cancelled()
                self.state = State.CONNECTING
                self.reconnects += 1
                delay = retrying.next_delay()
                log = logger.warning if isinstance(exc, CONNECTION_ERRORS) else logger.exception
                log("Redis pub/sub connection lost (%s); retrying in %.2fs", exc, delay)
                await self._disconnect()
                await asyncio.sleep(delay)  # backoff between reconnects, not a poll

    async def reconnect(self) -> None:
        """Leave the current connection now and connect again, resubscribing everything.

        For a switch of master: the deposed master may stay up, so nothing else would
        make the reader leave it. Counted in ``reconnects``; waiters keep waiting.
        """
        task = self._task
        if task is None or self.state is State.CLOSED:
            return  # not started: the first connect goes to the current master
        self._task = None
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            raise_if_cancelled()  # the caller's own cancellation must not be lost here
        await self._disconnect()
        self.reconnects += 1
        self.state = State.IDLE
        self.start()

    async def _connect(self) -> None:
        async with self._lock:
            await self._disconnect()  # one left by a reader stopped by close_if_unused()
            conn = self._pool.make_connection()
            await conn.connect()
            self._conn = conn
            self._asked = self._answered = 0
            self._last_ask.clear()
            wanted = sorted(self._wanted)
            for channel in wanted:
                self._asked += 1
                self._last_ask[channel] = self._asked
            if wanted:
                await conn.send_command("SUBSCRIBE", *wanted, check_health=False)
            if self.state is State.CLOSED:
                # close() ran meanwhile and redis-py swallowed its cancellation: reading
                # now would block close() for ever.
                raise asyncio.CancelledError
            self.state = State.CONNECTED
            self._release_answered()

    async def _read_forever(self) -> None:
        read = self._conn.read_response
        on_message = self._on_message
        while self.state is not State.CLOSED:
            reply = await read(timeout=math.inf, disable_decoding=True, push_request=True)
            kind = reply[0]
            if kind == b"message":
                try:
                    on_message(reply[1], reply[2])
                except Exception:  # one bad message must not stop the reader
                    logger.exception("Dropped a pub/sub message that could not be handled")
            elif kind in (b"subscribe", b"unsubscribe"):
                self._answered += 1
                self._release(reply[1].decode())

    def _release(self, channel: str) -> None:
        if self._last_ask.get(channel, 0) <= self._answered:
            for waiter in self._waiters.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def _release_answered(self) -> None:
        for channel in list(self._waiters):
            self._release(channel)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await conn.disconnect()

    async def close_if_unused(self) -> None:
        """Close the connection when no channel is wanted; the next :meth:`want` reopens it."""
        if self._wanted or self._task is None or self.state is State.CLOSED:
            return
        task, self._task = self._task, None
        self.state = State.IDLE  # _ask() leaves the connection alone; want() restarts
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._task is None:  # else a want() meanwhile started a reader, which owns it
            await self._disconnect()

    async def close(self) -> None:
        """Stop the reader, close the connection and the pool (idempotent)."""
        self.state = State.CLOSED
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()
        await close_pool(self._pool)
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.cancel()
        self._waiters.clear()


class Host:
    """Connections to one Redis server: a command client with its scripts, and a subscriber.

    Registry writes go through :meth:`submit`: they reach Redis in the order they were
    submitted (one writer, one pipeline at a time), batched into one round trip, so the
    registry sees concurrent joins and leaves in the order the node applied them.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        on_message: MessageHandler,
        backoff: retry.Backoff,
        failover_timeout: float = 10.0,
        limits: PoolLimits = DEFAULT_LIMITS,
    ) -> None:
        #: For a Sentinel host: where the master is; both pools follow it.
        self.watch = (
            MasterWatch(spec, failover_timeout=failover_timeout, backoff=backoff)
            if is_sentinel(spec)
            else None
        )
        self.client = make_client(spec, self.watch, limits)
        self.subscriber = Subscriber(spec, on_message, backoff, make_pool(spec, self.watch))
        self.on_master_switch(self._follow_master)
        self._scripts: dict[str, AsyncScript] = {}
        self._loaded: set[str] = set()
        self._pending: list[tuple[Call[Any], asyncio.Future[Any]]] = []
        self._pending_wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.failed_writes = 0  # submitted writes that failed: the registry may lack them
        self._publishing = False
        self._publish_queue: list[tuple[str, bytes, asyncio.Future[int]]] = []
        self._publish_flusher: asyncio.Task[None] | None = None
        self._closed = False

    def on_master_switch(self, listener: SwitchListener) -> None:
        """Call ``await listener(new_address)`` after each Sentinel switch of master.

        Listeners run in the order added; the host's own (added first) has already moved
        the pooled connections and the subscriber to the new master. A no-op for a host
        that is not a Sentinel one.
        """
        if self.watch is not None:
            self.watch.on_switch(listener)

    async def _follow_master(self, address: tuple[str, int]) -> None:
        # The pool moves by itself: a connection to the old master is reconnected when
        # next taken and closed when returned (sentinel._MasterPool). The reader does not
        # take or return its connection, so it is moved here.
        await self.subscriber.reconnect()

    def _script(self, source: str) -> AsyncScript:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script

    async def run(self, call: Call[T]) -> T:
        """Run one script call now, retried as retry.py allows (``call.idempotent``)."""
        run = functools.partial(
            self._script(call.script), keys=list(call.keys), args=list(call.args)
        )
        reply = await retry.call(run, idempotent=call.idempotent, what="EVALSHA")
        return call.parse(reply)

    async def _load(self, source: str) -> None:
        load = functools.partial(self.client.script_load, source)
        await retry.call(load, idempotent=True, what="SCRIPT LOAD")

    async def run_all(self, calls: list[Call[Any]]) -> list[Any]:
        """Run calls in one pipeline (one round trip); a failed call's entry is its exception.

        Redis runs them in order, also when it had lost a script (see below). The
        pipeline is retried after a connection error only when every call in it is
        idempotent, or when it was not sent at all.
        """
        await self._load_scripts(calls)  # once per script, so a batch rarely half-fails
        replies = await self._pipeline(calls)
        for _ in range(3):  # bounded: Redis could keep flushing its scripts
            first = next((i for i, r in enumerate(replies) if isinstance(r, NoScriptError)), None)
            if first is None:
                break
            # Redis lost its scripts (a restart, SCRIPT FLUSH) and skipped this call, but
            # may have run later calls of the batch whose script it had: run the whole
            # tail again, in order, so no write overtakes an earlier one. The calls run
            # here are idempotent (registry writes, heartbeats) or come in batches of
            # one script (RELEASE), where every call after a NOSCRIPT fails the same way.
            self._loaded.clear()
            await self._load_scripts(calls[first:])
            replies[first:] = await self._pipeline(calls[first:])
        results: list[Any] = []
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                results.append(reply)
                continue
            try:
                results.append(call.parse(reply))
            except Exception as exc:
                results.append(exc)
        return results

    async def _load_scripts(self, calls: list[Call[Any]]) -> None:
        for source in {call.script for call in calls} - self._loaded:
            await self._load(source)
            self._loaded.add(source)

    async def _pipeline(self, calls: list[Call[Any]]) -> list[Any]:
        idempotent = all(call.idempotent for call in calls)
        run = functools.partial(self._pipeline_once, calls)
        return await retry.call(run, idempotent=idempotent, what="pipeline")

    async def _pipeline_once(self, calls: list[Call[Any]]) -> list[Any]:
        # EVALSHA directly: redis-py's script objects would add a SCRIPT EXISTS round trip.
        async with self.client.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.evalsha(self._script(call.script).sha, len(call.keys), *call.keys, *call.args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies

    async def publish(self, channel: str, data: bytes) -> int:
        """PUBLISH and return how many subscribers got it.

        Auto-pipelined: a call goes out at once when no publish is in flight; calls made
        meanwhile are queued and sent together, in order, in one pipeline when it
        returns. A lone sequential caller pays nothing extra; concurrent callers share
        round trips instead of each paying redis-py's per-command cost.
        """
        if self._publishing:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._publish_queue.append((channel, data, future))
            return await future
        self._publishing = True
        try:
            send = functools.partial(self.client.publish, channel, data)
            return int(await retry.call(send, idempotent=False, what="PUBLISH"))
        finally:
            if self._publish_queue and not self._closed:
                self._publish_flusher = asyncio.get_running_loop().create_task(
                    self._flush_publishes(), name="broadcast_layer.publisher"
                )
            else:
                self._publishing = False

    async def _flush_publishes(self) -> None:
        try:
            while self._publish_queue and not self._closed:
                batch, self._publish_queue = self._publish_queue, []
                try:
                    send = functools.partial(self._publish_batch, batch)
                    replies = await retry.call(send, idempotent=False, what="PUBLISH pipeline")
                except Exception as exc:
                    raise_if_cancelled()
                    replies = [exc] * len(batch)
                for (_, _, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(int(reply))
        finally:
            self._publishing = False

    async def _publish_batch(self, batch: list[tuple[str, bytes, asyncio.Future[int]]]) -> Any:
        async with self.client.pipeline(transaction=False) as pipe:
            for channel, data, _ in batch:
                pipe.publish(channel, data)
            return await pipe.execute(raise_on_error=False)

    def submit(self, call: Call[T]) -> asyncio.Future[T]:
        """Queue a write; the future resolves once Redis has run it (in submission order)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        if self._writer is None or self._writer.done():  # asyncio.run() may have cancelled it
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(), name="broadcast_layer.registry-writer"
            )
        self._pending_wakeup.set()
        return future

    def submit_quietly(self, call: Call[Any]) -> None:
        """Queue a write nobody waits for; a failure is logged, not raised."""
        self.submit(call).add_done_callback(_log_failure)

    async def _write_loop(self) -> None:
        while not self._closed:
            await self._pending_wakeup.wait()
            self._pending_wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                results = await self.run_all([call for call, _ in batch])
            except Exception as exc:  # the writer must outlive any one failed batch
                raise_if_cancelled()
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    self.failed_writes += 1
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def close_pools(self) -> None:
        """Close the command connections (reopened on next use), and the pub/sub one if unused."""
        await close_pool(self.client.connection_pool)
        await self.subscriber.close_if_unused()

    async def close(self) -> None:
        """Stop the writer and the subscriber, close every connection (idempotent)."""
        self._closed = True
        flusher, self._publish_flusher = self._publish_flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flusher
        for _, _, queued in self._publish_queue:
            queued.cancel()
        self._publish_queue.clear()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        await self.subscriber.close()
        await close_client(self.client)
        if self.watch is not None:
            await self.watch.close()


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("Registry write failed: %s", future.exception())
