"""Building redis-py clients for one ``hosts`` entry (URL, dict or Sentinel), and closing them.

Command connections are *guarded* (:func:`guard_pool`): a command is never written
on a connection the server has already closed (the connection reconnects first), and
a failure to connect is a :class:`~broadcast_layer._redis.errors.NotSent`, so the
retry policy in ``retry.py`` knows the command can be sent again safely.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import select
from collections.abc import Callable
from typing import Any

import redis
import redis.cluster
import redis.connection
import redis.sentinel
from channels_redis.utils import create_pool
from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection as AsyncAbstractConnection
from redis.asyncio.connection import Connection as AsyncConnection
from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

from .errors import not_sent
from .pools import PoolLimits, make_waiting
from .sentinel import MasterWatch, master_pool

logger = logging.getLogger(__name__)

DEFAULT_LIMITS = PoolLimits()


_REDIS_SOCKET_TIMEOUT: float | None
try:  # redis-py >= 6 applies a default socket_timeout that is not in connection_kwargs
    from redis._defaults import DEFAULT_SOCKET_TIMEOUT as _REDIS_SOCKET_TIMEOUT
except ImportError:  # pragma: no cover - older redis-py: no default timeout
    _REDIS_SOCKET_TIMEOUT = None


async def _push_as_is(response: Any) -> Any:
    return response


def pass_pushes_through(connection: Any) -> None:
    """Hand a pub/sub connection's push frames (RESP3) to its reader as they come.

    redis-py's default handler first formats each whole message into a DEBUG log line,
    building the string even when DEBUG is off: about a seventh of a node's CPU per
    message received. Reads redis-py's private ``_parser`` (its own PubSub sets its
    handler there the same way); a parser without the hook is left alone.
    """
    setter = getattr(getattr(connection, "_parser", None), "set_pubsub_push_handler", None)
    if setter is not None:
        setter(_push_as_is)


def blocking_timeout(client: aioredis.Redis | RedisCluster, longest: float = 5.0) -> float:
    """Seconds a blocking command may wait in Redis without tripping ``socket_timeout``."""
    if isinstance(client, RedisCluster):
        kwargs = client.nodes_manager.connection_kwargs
    else:
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
        if self.is_connected:  # the pool calls this on every checkout
            return
        self._handshaking = True  # the handshake sends several commands before reading
        try:
            with not_sent("Could not connect to Redis"):
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
        # check_health=False: another task reads this socket (a pub/sub connection), so
        # unread data is its business, not a sign of a connection the server closed.
        if check_health and self.is_connected and not self._handshaking and self._closed_by_peer():
            logger.debug("Pooled connection closed by the server while idle; reconnecting")
            await self.disconnect(nowait=True)
        if not self.is_connected:
            await self.connect()
        if check_health and self.health_check_interval:
            with not_sent("Health check before the command failed"):
                await self.check_health()  # type: ignore[no-untyped-call]
        if self._handshaking or not self.socket_timeout:
            await super().send_packed_command(command, check_health=False)
        else:
            await self._write(command)

    async def _write(self, command: Any) -> None:
        """Write a packed command as redis-py does, bounded by ``socket_timeout``.

        redis-py bounds each write with ``asyncio.wait_for``, which runs the write as a
        task of its own: a tenth of a command's CPU. The kernel takes a small command at
        once, and ``drain()`` then returns at once (raising if the connection was lost);
        only a write that leaves data buffered can block, so only that one is bounded,
        with ``asyncio.timeout``.
        """
        writer: Any = getattr(self, "_writer")  # noqa: B009 - redis-py's private stream
        try:
            if isinstance(command, str):
                command = command.encode()
            if isinstance(command, bytes):
                command = [command]
            writer.writelines(command)
            if writer.transport.get_write_buffer_size():
                async with asyncio.timeout(self.socket_timeout):
                    await writer.drain()
            else:
                await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            number, message = ("UNKNOWN", exc.args[0]) if len(exc.args) == 1 else exc.args[:2]
            raise redis.exceptions.ConnectionError(
                f"Error {number} while writing to socket. {message}."
            ) from exc
        except BaseException:
            await self.disconnect(nowait=True)  # a half-written command: unusable
            raise


class _SyncGuard(redis.connection.AbstractConnection):
    """Mixin for blocking command connections: connection failures before sending are NotSent.

    redis-py's blocking pool already reconnects a pooled connection the server closed
    (its ``can_read()`` raises on EOF before the command is written).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry = SyncRetry(NoBackoff(), 0)  # see _AsyncGuard

    def connect(self) -> None:
        with not_sent("Could not connect to Redis"):
            super().connect()  # type: ignore[no-untyped-call]

    def check_health(self) -> None:
        with not_sent("Health check before the command failed"):
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

    Its pool waits for a free connection (:func:`~broadcast_layer._redis.pools.make_waiting`).
    """
    pool = make_waiting(make_pool(host, watch), host, limits)
    return aioredis.Redis(connection_pool=guard_pool(pool))


def _cluster_node(host: dict[str, Any]) -> tuple[ClusterNode, dict[str, Any]]:
    """A startup node for one ``hosts`` entry, and the connection options it carries."""
    options = dict(host)
    if "address" in options:
        address = options.pop("address")
        if not isinstance(address, str):
            raise ValueError(f"a cluster node needs a redis:// or rediss:// URL, got {address!r}")
        options.update(parse_url(address))
    options.pop("db", None)  # a cluster has database 0 only
    name, port = options.pop("host", "localhost"), int(options.pop("port", 6379))
    if options.pop("connection_class", None) is AsyncSSLConnection:
        options["ssl"] = True
    return ClusterNode(name, port), options


def make_cluster_client(
    hosts: tuple[dict[str, Any], ...], limits: PoolLimits = DEFAULT_LIMITS
) -> RedisCluster:
    """A redis-py asyncio cluster client with ``hosts`` as startup nodes, guarded.

    Connection options (password, TLS through ``rediss://``, timeouts) come from the
    first entry. redis-py's own retries are off (``retry.py`` decides what may be sent
    again), so a SPUBLISH whose connection dropped after sending is never doubled;
    MOVED and ASK redirections are still followed (the first node did not run it).
    """
    nodes, options = zip(*(_cluster_node(host) for host in hosts), strict=True)
    client = RedisCluster(
        startup_nodes=list(nodes),
        max_connections=limits.max_connections,
        retry=AsyncRetry(NoBackoff(), 0),
        **options[0],
    )
    base = AsyncSSLConnection if options[0].get("ssl") else AsyncConnection
    guarded = _guarded(base, _AsyncGuard)
    client.nodes_manager.connection_kwargs["connection_class"] = guarded
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = guarded
    return client


def make_sync_cluster_client(
    hosts: tuple[dict[str, Any], ...], limits: PoolLimits = DEFAULT_LIMITS
) -> redis.RedisCluster:
    """The blocking twin of :func:`make_cluster_client` (redis-py's retries off too)."""
    nodes = []
    options: dict[str, Any] = {}
    for host in hosts:
        node, node_options = _cluster_node(host)
        nodes.append(redis.cluster.ClusterNode(node.host, node.port))  # type: ignore[no-untyped-call]
        options = options or node_options
    if options.pop("ssl", False):
        options["ssl"] = True
    return redis.RedisCluster(
        startup_nodes=nodes,
        max_connections=limits.max_connections,
        retry=SyncRetry(NoBackoff(), 0),
        **options,
    )


async def cluster_versions(hosts: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """Each master's Redis version, by ``host:port`` (for the system check).

    Raises redis-py's errors when no startup node answers or the cluster is down.
    """
    client = make_cluster_client(hosts)
    try:
        await client.initialize()
        replies = await client.info("server", target_nodes=RedisCluster.PRIMARIES)
        if "redis_version" in replies:  # one master: redis-py returns its reply alone
            replies = {client.get_primaries()[0].name: replies}
        return {name: str(info["redis_version"]) for name, info in replies.items()}
    finally:
        await client.aclose()


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

    Its pool waits for a free connection (:func:`~broadcast_layer._redis.pools.make_waiting`).
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
