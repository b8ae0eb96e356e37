"""The pub/sub reader of one host: a dedicated connection whose subscriptions follow a wanted set.

The :class:`Subscriber` owns one connection and one reader task that blocks on the
socket. It keeps Redis's subscriptions equal to the wanted set, tells callers when a
SUBSCRIBE is acknowledged, and after a dropped connection reconnects with backoff and
subscribes to everything wanted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from channels_redis.utils import create_pool

from .. import _metrics
from ..exceptions import RedisUnavailable
from .clients import close_pool, pass_pushes_through
from .errors import CONNECTION_ERRORS
from .retry import DEFAULT_BACKOFF, Backoff, Retrying, raise_if_cancelled

logger = logging.getLogger(__name__)

#: Called with (pub/sub channel, data) for each message, on the reader task. It returns
#: None, or an awaitable the reader awaits before it reads the next message: the
#: handler's back-pressure (the reader stops reading the socket meanwhile, Redis buffers).
MessageHandler = Callable[[bytes, bytes], Awaitable[None] | None]
#: Called on the reader task with True when a connection that was up is lost, and with
#: False once a new connection has Redis's acknowledgement of every wanted channel.
ConnectionHandler = Callable[[bool], None]


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
        backoff: Backoff = DEFAULT_BACKOFF,
        pool: Any = None,
        on_connection: ConnectionHandler | None = None,
    ) -> None:
        self._pool = create_pool(host) if pool is None else pool
        self._on_message = on_message
        self._on_connection = on_connection
        self._backoff = backoff
        self.state = State.IDLE
        self._lost = False  # a connection that was up is gone and not yet restored
        self._restored_at = 0  # answers that complete the resubscribe after a loss
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
            self._set_state(State.CONNECTING)
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="broadcast_layer.subscriber"
            )

    async def want(self, channels: Iterable[str]) -> None:
        """Add channels to the wanted set and SUBSCRIBE to the new ones (does not wait)."""
        new = [c for c in channels if c not in self._wanted]
        self._wanted.update(new)
        if new:
            _metrics.recorder.subscriptions(len(new))
        self.start()
        await self._ask("SUBSCRIBE", new)

    async def unwant(self, channels: Iterable[str]) -> None:
        """Remove channels from the wanted set and UNSUBSCRIBE from them."""
        gone = [c for c in channels if c in self._wanted]
        self._wanted.difference_update(gone)
        if gone:
            _metrics.recorder.subscriptions(-len(gone))
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
        while self.state is not State.CLOSED:  # not only cancellation: see Credit.run
            try:
                await self._connect()
                # redis-py's send (asyncio.wait_for on Python 3.11) can swallow a
                # cancellation; the read below would then block for ever.
                raise_if_cancelled()
                retrying.reset()
                await self._read_forever()
            except Exception as exc:  # any failure: reconnect rather than lose every group
                raise_if_cancelled()
                self._connection_lost()
                self._set_state(State.CONNECTING)
                self.reconnects += 1
                _metrics.recorder.reconnected()
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
        self._connection_lost()
        self.reconnects += 1
        _metrics.recorder.reconnected()
        self._set_state(State.IDLE)
        self.start()

    async def _connect(self) -> None:
        async with self._lock:
            await self._disconnect()  # one left by a reader stopped by close_if_unused()
            conn = self._pool.make_connection()
            pass_pushes_through(conn)
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
            self._set_state(State.CONNECTED)
            if self._lost:
                self._restored_at = self._asked
                self._check_restored()
            self._release_answered()

    async def _read_forever(self) -> None:
        read = self._conn.read_response
        on_message = self._on_message
        while self.state is not State.CLOSED:
            reply = await read(timeout=math.inf, disable_decoding=True, push_request=True)
            kind = reply[0]
            if kind == b"message":
                try:
                    pause = on_message(reply[1], reply[2])
                    if pause is not None:
                        await pause
                except Exception:  # one bad message must not stop the reader
                    logger.exception("Dropped a pub/sub message that could not be handled")
            elif kind in (b"subscribe", b"unsubscribe"):
                self._answered += 1
                self._release(reply[1].decode())
                if self._lost:
                    self._check_restored()

    def _set_state(self, state: State) -> None:
        old, self.state = self.state, state
        if old is not state:
            _metrics.recorder.pubsub_state(old.value, state.value)

    def _connection_lost(self) -> None:
        """Report a loss once per outage: only a connection that was up can be lost."""
        if self.state is State.CONNECTED and not self._lost:
            self._lost = True
            self._notify(True)

    def _check_restored(self) -> None:
        if self._answered >= self._restored_at:
            self._lost = False
            self._notify(False)

    def _notify(self, lost: bool) -> None:
        if self._on_connection is not None:
            try:
                self._on_connection(lost)
            except Exception:  # a listener's failure must not stop the reader
                logger.exception("A pub/sub connection listener failed")

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
        self._set_state(State.IDLE)  # _ask() leaves the connection alone; want() restarts
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._task is None:  # else a want() meanwhile started a reader, which owns it
            await self._disconnect()

    async def close(self) -> None:
        """Stop the reader, close the connection and the pool (idempotent)."""
        if self.state is not State.CLOSED and self._wanted:
            _metrics.recorder.subscriptions(-len(self._wanted))
        self._set_state(State.CLOSED)
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
