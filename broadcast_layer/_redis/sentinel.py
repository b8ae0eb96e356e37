"""Following a Sentinel-monitored master: ``+switch-master``, ``ROLE`` checks, failover waits.

A :class:`MasterWatch` (one per Sentinel host and node) knows where the master is. It
listens for ``+switch-master`` on one sentinel at a time, trying each in turn, and
re-checks the master with every sentinel and ``ROLE`` periodically, after each
(re)subscription and whenever a connection to the master fails, since an announcement
can be missed. Connections from :func:`master_pool` take the address from it, wait for a
new master while there is none (up to ``failover_timeout``), and keep only a connection
whose server answers ``ROLE`` as master. Its listeners hear of every switch at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .retry import Backoff, Retrying, raise_if_cancelled

__all__ = ["CHECK_INTERVAL", "MasterWatch", "is_sentinel", "master_pool"]

logger = logging.getLogger(__name__)

Address = tuple[str, int]
SwitchListener = Callable[[Address], Awaitable[None]]

#: Seconds between two checks of the master with the sentinels and ``ROLE``.
CHECK_INTERVAL = 5.0
#: Longest wait between two checks while no master is known (jittered below it): the
#: sentinel a node listens to may announce a new master up to 2 s after the leader.
SEARCH_INTERVAL = 0.5
#: Longest wait for one sentinel's answer or one ``ROLE`` probe.
QUERY_TIMEOUT = 2.0
_FAILURES = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
_SENTINEL_KEYS = ("sentinels", "master_name", "sentinel_kwargs")
#: Options of the master's pool, not of a connection: the ROLE probe's client takes none.
_POOL_KEYS = ("connection_class", "is_master", "check_connection")


def is_sentinel(spec: Mapping[str, Any]) -> bool:
    """True for a ``hosts`` entry that names a Sentinel-monitored master."""
    return "master_name" in spec


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class MasterState(enum.Enum):
    """What a :class:`MasterWatch` knows."""

    SEARCHING = "searching"  # no usable master known: new connections wait
    FOUND = "found"  # ``address`` is the master


class MasterWatch:
    """Where one Sentinel-monitored master is, kept current by ``+switch-master`` and checks.

    Owns two tasks (the ``+switch-master`` listener and the checker), started on first
    use and cancelled and awaited by :meth:`close`.
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        *,
        failover_timeout: float,
        backoff: Backoff,
        check_interval: float = CHECK_INTERVAL,
    ) -> None:
        self.service: str = spec["master_name"]
        self.failover_timeout = failover_timeout
        self.check_interval = check_interval
        self._backoff = backoff
        self._sentinel_addresses = [(str(h), int(p)) for h, p in spec["sentinels"]]
        sentinel_kwargs = spec.get("sentinel_kwargs")
        if sentinel_kwargs is None:  # redis-py's rule: the master's socket options
            sentinel_kwargs = {k: v for k, v in spec.items() if k.startswith("socket_")}
        self._sentinel_kwargs = dict(sentinel_kwargs)
        self._master_kwargs = {k: v for k, v in spec.items()
                               if k not in _SENTINEL_KEYS + _POOL_KEYS}  # fmt: skip
        self._queried: list[aioredis.Redis] = []
        self._probe: tuple[Address, aioredis.Redis] | None = None
        self.address: Address | None = None
        self.state = MasterState.SEARCHING
        self._searching_since: float | None = None  # event-loop time the master went missing
        self.switches = 0
        self._announced_count = 0  # a check begun before an announcement must not undo it
        self._found = asyncio.Event()
        self._recheck = asyncio.Event()
        self._recheck.set()  # the first check runs at once
        self._listeners: list[SwitchListener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # -- what connections and the host use ---------------------------------------------

    def on_switch(self, listener: SwitchListener) -> None:
        """Call ``await listener(new_address)`` after each switch of master."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Start (or restart, after ``asyncio.run()`` cancelled them) the watch's tasks."""
        if self._closed or (self._tasks and not any(t.done() for t in self._tasks)):
            return
        for task in self._tasks:
            task.cancel()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen_loop(), name="broadcast_layer.sentinel-listener"),
            loop.create_task(self._check_loop(), name="broadcast_layer.sentinel-checker"),
        ]

    async def master(self) -> Address:
        """The master's address; while there is none, wait for one.

        Waits while the master has been missing for less than ``failover_timeout``;
        past that, raises redis-py's ``MasterNotFoundError`` (a ConnectionError) at once
        until a master is back, so retries of a call do not stretch the bound.
        """
        self.start()
        if self.state is not MasterState.FOUND or self.address is None:
            if self._searching_since is None:  # never found yet: from the first call
                self._searching_since = asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout_at(self._searching_since + self.failover_timeout):
                    await self._found.wait()
            except TimeoutError:
                raise MasterNotFoundError(
                    f"No master for {self.service!r} within failover_timeout "
                    f"({self.failover_timeout}s)"
                ) from None
        if self.address is None:  # pragma: no cover - FOUND always comes with an address
            raise MasterNotFoundError(f"No master for {self.service!r}")
        return self.address

    def lost(self, address: Address) -> None:
        """A connection to ``address`` failed or found no master there: check again now."""
        if address == self.address and self.state is MasterState.FOUND:
            logger.warning("Master %s of %r is unreachable or demoted", address, self.service)
            self._searching()
        self._recheck.set()

    async def close(self) -> None:
        """Cancel and await the tasks, close the sentinel connections (idempotent)."""
        self._closed = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        clients, self._queried = self._queried, []
        for client in clients:
            with contextlib.suppress(*_FAILURES):
                await client.aclose()
        await self._close_probe()

    # -- state -------------------------------------------------------------------------

    def _searching(self) -> None:
        if self.state is MasterState.FOUND:
            self._searching_since = asyncio.get_running_loop().time()
        self.state = MasterState.SEARCHING
        self._found.clear()

    async def _master_is(self, address: Address) -> None:
        switched = self.address is not None and address != self.address
        self.address = address
        self.state = MasterState.FOUND
        self._found.set()
        if not switched:
            return
        self.switches += 1
        logger.warning("Master of %r is now %s:%s; following it", self.service, *address)
        for listener in list(self._listeners):
            try:
                await listener(address)
            except Exception:  # one failing listener must not stop the others
                logger.exception("A listener failed to follow the switch of master")

    # -- +switch-master ----------------------------------------------------------------

    async def _listen_loop(self) -> None:
        retrying = Retrying(self._backoff)
        attempt = 0
        while not self._closed:
            raise_if_cancelled()
            host, port = self._sentinel_addresses[attempt % len(self._sentinel_addresses)]
            attempt += 1
            if await self._listen(aioredis.Redis(host=host, port=port, **self._sentinel_kwargs)):
                retrying.reset()
            if attempt % len(self._sentinel_addresses) == 0:  # tried them all: back off
                await asyncio.sleep(retrying.next_delay())  # between reconnects, not a poll

    async def _listen(self, sentinel: aioredis.Redis) -> bool:
        """Follow one sentinel's announcements until it fails; True if it was heard."""
        pubsub = sentinel.pubsub()
        heard = False
        try:
            await pubsub.subscribe("+switch-master")
            heard = True
            self._recheck.set()  # a switch may have been missed while no sentinel was heard
            while True:
                raise_if_cancelled()
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and message["type"] == "message":
                    await self._announced(_text(message["data"]))
        except _FAILURES as exc:
            logger.debug("Lost the sentinel's +switch-master feed (%s)", exc)
        except Exception:  # e.g. a sentinel refusing SUBSCRIBE: try the next one
            logger.exception("The sentinel's +switch-master feed failed")
        finally:
            with contextlib.suppress(*_FAILURES):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(*_FAILURES):
                await sentinel.aclose()
        return heard

    async def _announced(self, data: str) -> None:
        fields = data.split()  # "<name> <old ip> <old port> <new ip> <new port>"
        if len(fields) == 5 and fields[0] == self.service:
            self._announced_count += 1
            await self._master_is((fields[3], int(fields[4])))

    # -- checks ------------------------------------------------------------------------

    async def _check_loop(self) -> None:
        retrying = Retrying(Backoff(self._backoff.base, min(self._backoff.cap, SEARCH_INTERVAL)))
        while not self._closed:
            searching = self.state is not MasterState.FOUND
            wait = retrying.next_delay() if searching else self.check_interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # a timer, not a hot path
                    await self._recheck.wait()
            self._recheck.clear()
            announced = self._announced_count
            try:
                address = await self._check()
            except Exception:  # the checker must outlive any one failed check
                logger.exception("Checking the master of %r failed", self.service)
                address = None
            raise_if_cancelled()
            if announced != self._announced_count:
                continue  # a switch was announced meanwhile: this answer may predate it
            if address is not None:
                await self._master_is(address)
                retrying.reset()
            else:
                self._searching()

    async def _check(self) -> Address | None:
        """The master the sentinels name (highest config epoch), if ``ROLE`` confirms it."""
        if not self._queried:
            self._queried = [aioredis.Redis(host=h, port=p, **self._sentinel_kwargs)
                             for h, p in self._sentinel_addresses]  # fmt: skip
        answers = await asyncio.gather(*(self._ask(s) for s in self._queried))
        reachable = [a for a in answers if a is not None]
        valid = [a for a in reachable if a.get("is_master")
                 and not a.get("is_sdown") and not a.get("is_odown")]  # fmt: skip
        if valid:
            best = max(valid, key=lambda a: int(a.get("config-epoch", 0)))
            candidate: Address | None = (str(best["ip"]), int(best["port"]))
        else:  # no sentinel answered: keep to the known master if it still says so
            candidate = None if reachable else self.address
        if candidate is not None and await self._role(candidate) == "master":
            return candidate
        return None

    async def _ask(self, sentinel: aioredis.Redis) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(QUERY_TIMEOUT):
                state = await sentinel.sentinel_master(self.service)
                return state if isinstance(state, dict) else None
        except (*_FAILURES, ResponseError) as exc:
            logger.debug("A sentinel did not answer for %r: %s", self.service, exc)
            return None

    async def _role(self, address: Address) -> str | None:
        if self._probe is None or self._probe[0] != address:  # one client, kept between checks
            await self._close_probe()
            client = aioredis.Redis(host=address[0], port=address[1], **self._master_kwargs)
            self._probe = (address, client)
        try:
            async with asyncio.timeout(QUERY_TIMEOUT):
                reply = await self._probe[1].execute_command("ROLE")  # type: ignore[no-untyped-call]
                return _text(reply[0])
        except (*_FAILURES, ResponseError) as exc:
            logger.debug("ROLE on %s failed: %s", address, exc)
            return None

    async def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            with contextlib.suppress(*_FAILURES):
                await probe[1].aclose()


class _MasterConnection(SentinelManagedConnection):
    """A connection to the master its pool's :class:`MasterWatch` names, checked by ``ROLE``."""

    async def _connect_retry(self) -> None:
        if self.is_connected:
            return
        watch: MasterWatch = self.connection_pool.watch
        deadline = asyncio.get_running_loop().time() + watch.failover_timeout
        while True:
            raise_if_cancelled()
            address = await watch.master()
            try:
                await self.connect_to(address)  # type: ignore[no-untyped-call]
                role = await self._role()
                if role == "master":
                    return
                problem: Exception = RedisConnectionError(f"{address} is a {role}, not a master")
            except _FAILURES as exc:
                problem = exc
            await self.disconnect()
            watch.lost(address)  # the next watch.master() waits for a confirmed master
            # Bounded by this deadline too: a master the checks confirm that this
            # connection still cannot reach must not keep it looping.
            if asyncio.get_running_loop().time() >= deadline:
                raise problem

    async def _role(self) -> str:
        await self.send_command("ROLE", check_health=False)
        return _text((await self.read_response())[0])


class _MasterPool(SentinelConnectionPool):
    """redis-py's Sentinel pool, with the master's address from a :class:`MasterWatch`."""

    def __init__(self, watch: MasterWatch, **kwargs: Any) -> None:
        super().__init__(watch.service, watch, **kwargs)  # type: ignore[no-untyped-call]
        self.watch = watch

    async def get_master_address(self) -> Address:
        self.master_address = await self.watch.master()
        return self.master_address

    def _deposed(self, connection: Any) -> bool:
        address = self.watch.address
        return bool(connection.is_connected) and (connection.host, connection.port) != address

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        # After a switch, an idle connection to the old master is reconnected when it is
        # next taken, by its taker alone: closing idle connections from another task
        # races with a caller taking one and writing to a closing socket.
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        if self._deposed(connection):
            try:
                await connection.disconnect()
                await connection.connect()
            except BaseException:
                await self.release(connection)
                raise
        return connection

    async def release(self, connection: Any) -> None:
        # A connection that was busy when the master switched is closed, not reused.
        if self._deposed(connection):
            await connection.disconnect()
        await super().release(connection)


def master_pool(spec: Mapping[str, Any], watch: MasterWatch) -> SentinelConnectionPool:
    """A connection pool for a Sentinel ``hosts`` entry whose connections follow ``watch``."""
    kwargs = {k: v for k, v in spec.items() if k not in _SENTINEL_KEYS}
    given = kwargs.get("connection_class")  # e.g. redis-py's SentinelManagedSSLConnection
    kwargs["connection_class"] = _MasterConnection if given is None else _following(given)
    return _MasterPool(watch, **kwargs)


@functools.cache
def _following(cls: type) -> type:
    if issubclass(cls, _MasterConnection):
        return cls
    return type(f"Following{cls.__name__}", (_MasterConnection, cls), {})
