"""Connections to one Redis server on one event loop, and their synchronous twin.

:class:`Host` holds a guarded command client that runs script calls (one, or a batch in
one pipeline), an :class:`~.writer.OrderedWriter` for writes that must keep their order,
a :class:`~.writer.Publisher`, and a :class:`~.subscriber.Subscriber`; for a Sentinel
host, the :class:`~.sentinel.MasterWatch` they all follow. :class:`SyncHost` runs the
same script calls and PUBLISH with redis-py's blocking client.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from redis.asyncio import ConnectionPool
from redis.crc import key_slot
from redis.exceptions import NoScriptError, ResponseError

from .. import _metrics
from .._protocol import batch
from .._protocol.scripts import Call, Plan, publish_command, script_name
from . import retry
from .clients import (
    DEFAULT_LIMITS,
    close_client,
    close_pool,
    make_client,
    make_cluster_client,
    make_pool,
    make_sync_client,
    make_sync_cluster_client,
)
from .errors import sync_redis_errors
from .pools import PoolLimits
from .retry import Backoff
from .sentinel import MasterWatch, SwitchListener, is_sentinel
from .sharded import AckHandler, ShardedSubscriber
from .subscriber import ConnectionHandler, MessageHandler, Subscriber
from .writer import OrderedWriter, Publisher


def _checkout_args() -> tuple[str, ...]:
    """What ``get_connection()`` needs: redis-py before 5.3 requires a command name, later
    versions warn when one is given. Any name does: the pools ignore it."""
    name = inspect.signature(ConnectionPool.get_connection).parameters.get("command_name")
    return ("EVALSHA",) if name is not None and name.default is inspect.Parameter.empty else ()


_CHECKOUT_ARGS = _checkout_args()

T = TypeVar("T")

#: Registry pipelines one host's writer may have in flight at once, when their writes are
#: for different channels (see OrderedWriter): one more connection each.
WRITE_DEPTH = 4

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis packs commands in C; redis-py's own packer is pure Python
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - without the hiredis extra
    _pack = None


class Host:
    """Connections to one Redis server: a command client with its scripts, and a subscriber.

    Writes that must keep their order go through :attr:`writer` (see
    :class:`~.writer.OrderedWriter`); group and control messages through
    :attr:`publisher`.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        on_message: MessageHandler,
        backoff: Backoff,
        failover_timeout: float = 10.0,
        limits: PoolLimits = DEFAULT_LIMITS,
        on_connection: ConnectionHandler | None = None,
        write_timeout: float | None = None,
    ) -> None:
        """``write_timeout``: how long a write submitted to :attr:`writer` may wait for
        Redis's answer before it fails (None: no bound)."""
        #: For a Sentinel host: where the master is; both pools follow it.
        self.watch = (
            MasterWatch(spec, failover_timeout=failover_timeout, backoff=backoff)
            if is_sentinel(spec)
            else None
        )
        self.client: Any = make_client(spec, self.watch, limits)
        self.subscriber: Subscriber | ShardedSubscriber = Subscriber(
            spec, on_message, backoff, make_pool(spec, self.watch), on_connection
        )
        self.writer = OrderedWriter(self.run_all, write_timeout, batch.scope, WRITE_DEPTH)
        self.publisher = Publisher(self.client)
        self.on_master_switch(self._follow_master)
        self._shas: dict[str, str] = {}
        self._loaded: set[str] = set()
        #: Connections pipelines reuse instead of a pool checkout each (redis-py 8's
        #: checkout costs more than a small pipeline); at most WRITE_DEPTH.
        self._kept: list[Any] = []
        #: Bumped by a Sentinel switch and by every return of the kept connections (close,
        #: close_pools): a connection taken before it goes back to the pool when done.
        self._switches = 0

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
        await self._return_kept()  # taken again from the pool: to the new master
        if isinstance(self.subscriber, Subscriber):
            await self.subscriber.reconnect()

    def _sha(self, source: str) -> str:
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode()).hexdigest()
        return sha

    def evalsha_command(self, call: Call[Any]) -> tuple[Any, ...]:
        """The ``EVALSHA`` command that runs ``call``, as its arguments."""
        return ("EVALSHA", self._sha(call.script), len(call.keys), *call.keys, *call.args)

    async def run(self, call: Call[T]) -> T:
        """Run one script call now, retried as retry.py allows (``call.idempotent``)."""
        recorder = _metrics.recorder
        started = time.perf_counter() if recorder.enabled else 0.0
        reply = await retry.call(functools.partial(self._evalsha, call),
                                 idempotent=call.idempotent, what="EVALSHA")  # fmt: skip
        if recorder.enabled:
            recorder.registry_call(script_name(call.script), started)
        return call.parse(reply)

    async def _evalsha(self, call: Call[Any]) -> Any:
        # EVALSHA directly: redis-py's script objects check their arguments for deprecated
        # names on every call, a tenth of a send's CPU. NOSCRIPT means Redis lost its
        # scripts (a restart, SCRIPT FLUSH) and ran nothing: load it and run it again.
        command = self.evalsha_command(call)
        try:
            return await self._command(command)
        except NoScriptError:
            await self.client.script_load(call.script)
            return await self._command(command)

    async def _command(self, command: tuple[Any, ...]) -> Any:
        """One command on a kept connection, as :meth:`_pipeline_once` sends several: a
        pool checkout (redis-py's lock, observability hooks and argument check) costs
        about a quarter of a lone send's CPU."""
        connection, switches = await self._take()
        try:
            await connection.send_command(*command)
            reply = await connection.read_response()
        except ResponseError:  # an error reply: the connection is still in step
            await self._give_back(connection, switches)
            raise
        except BaseException:
            await connection.disconnect(nowait=True)  # a reply may be left unread
            await self.client.connection_pool.release(connection)
            raise
        await self._give_back(connection, switches)
        return reply

    async def _take(self) -> tuple[Any, int]:
        """A kept connection, else one from the pool; and the master switches so far."""
        switches = self._switches
        if self._kept:
            return self._kept.pop(), switches
        return await self.client.connection_pool.get_connection(*_CHECKOUT_ARGS), switches

    async def run_plan(self, plan: Plan[T]) -> T:
        """Run a plan's steps in turn: a step of one call as :meth:`run`, a larger one in
        one pipeline (:meth:`run_all`); a failed call fails the plan."""
        try:
            calls = next(plan)
            while True:
                if len(calls) == 1:
                    results = [await self.run(calls[0])]
                else:
                    results = _raise_first(await self.run_all(calls))
                calls = plan.send(results)
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _load(self, source: str) -> None:
        load = functools.partial(self.client.script_load, source)
        await retry.call(load, idempotent=True, what="SCRIPT LOAD")

    async def load(self, sources: set[str]) -> None:
        """Load scripts for :meth:`run_all` ahead of their first batch (which then takes one
        round trip instead of two); raises redis-py's errors like any call."""
        for source in sources - self._loaded:
            await self._load(source)
            self._loaded.add(source)

    async def run_all(self, calls: list[Call[Any]]) -> list[Any]:
        """Run calls in one pipeline (one round trip); a failed call's entry is its exception.

        Redis runs them in order, also when it had lost a script (see below). The
        pipeline is retried after a connection error only when every call in it is
        idempotent, or when it was not sent at all.
        """
        recorder = _metrics.recorder
        started = time.perf_counter() if recorder.enabled else 0.0
        # Registry writes of one slot go out as one script call (batch.py).
        sent = batch.merge(calls, self._slot)
        wire = [call for call, _ in sent]
        await self._load_scripts(wire)  # once per script, so a batch rarely half-fails
        replies = await self._pipeline(wire)
        if recorder.enabled:
            recorder.registry_call("pipeline", started)
        for _ in range(3):  # bounded: Redis could keep flushing its scripts
            first = next((i for i, r in enumerate(replies) if isinstance(r, NoScriptError)), None)
            if first is None:
                break
            # Redis lost its scripts (a restart, SCRIPT FLUSH) and skipped this call, but
            # may have run later calls of the batch whose script it had: run the whole
            # tail again, in order, so no write overtakes an earlier one. The calls run
            # here are idempotent (registry writes, heartbeats) or come in batches of
            # one script (CREDIT), where every call after a NOSCRIPT fails the same way.
            self._loaded.clear()
            await self._load_scripts(wire[first:])
            replies[first:] = await self._pipeline(wire[first:])
        return batch.split(sent, replies, len(calls))

    #: Which calls may share a batch: on one server, all of them (no slots).
    _slot: Callable[[Call[Any]], Hashable] | None = None

    async def _load_scripts(self, calls: list[Call[Any]]) -> None:
        await self.load({call.script for call in calls})

    async def _pipeline(self, calls: list[Call[Any]]) -> list[Any]:
        idempotent = all(call.idempotent for call in calls)
        run = functools.partial(self._pipeline_once, calls)
        return await retry.call(run, idempotent=idempotent, what="pipeline")

    async def _pipeline_once(self, calls: list[Call[Any]]) -> list[Any]:
        """Send the calls in one write on one pooled connection and read their replies.

        Not redis-py's pipeline: for the one or few script calls of a registry batch, its
        bookkeeping per command (command stack, callbacks, timing records) cost more
        than the calls; hiredis packs the command in C when it is installed.
        """
        commands = [self.evalsha_command(call) for call in calls]
        pool = self.client.connection_pool
        connection, switches = await self._take()
        try:
            if _pack is None:
                await connection.send_packed_command(connection.pack_commands(commands))
            else:
                await connection.send_packed_command(b"".join(map(_pack, commands)))
            replies: list[Any] = []
            for _ in commands:  # every reply is read, so the connection stays in step
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # this call's error, not the connection's
                    replies.append(exc)
        except BaseException:
            await connection.disconnect(nowait=True)  # replies may be left unread
            await pool.release(connection)
            raise
        await self._give_back(connection, switches)
        return replies

    async def _give_back(self, connection: Any, switches: int) -> None:
        """Keep a connection for the next call, or return it to the pool (which moves it
        to a new master when it is taken again)."""
        pool = self.client.connection_pool
        # Never every connection of a small pool: a call that finds none kept needs one.
        keep = min(WRITE_DEPTH, pool.max_connections - 1)
        if len(self._kept) < keep and switches == self._switches:
            self._kept.append(connection)
        else:
            await pool.release(connection)

    async def _return_kept(self) -> None:
        """Give the connections pipelines kept back to the pool, and those in use now
        when their pipeline is done."""
        self._switches += 1
        kept, self._kept = self._kept, []
        for connection in kept:
            await self.client.connection_pool.release(connection)

    async def close_pools(self) -> None:
        """Close the command connections (reopened on next use), and the pub/sub one if unused."""
        await self._return_kept()
        await close_pool(self.client.connection_pool)
        await self.subscriber.close_if_unused()

    async def close(self) -> None:
        """Stop the writers and the subscriber, close every connection (idempotent)."""
        await self.publisher.close()
        await self.writer.close()
        await self._return_kept()
        await self.subscriber.close()
        await close_client(self.client)
        if self.watch is not None:
            await self.watch.close()


class _RedisPyPipeline:
    """Runs a batch with redis-py's pipeline (the cluster client's routes it per master)."""

    client: Any
    evalsha_command: Callable[[Call[Any]], tuple[Any, ...]]

    async def _command(self, command: tuple[Any, ...]) -> Any:
        return await self.client.execute_command(*command)  # routed by its keys

    async def _pipeline_once(self, calls: list[Call[Any]]) -> list[Any]:
        # EVALSHA directly: redis-py's script objects would add a SCRIPT EXISTS round trip.
        async with self.client.pipeline(transaction=False) as pipe:
            for call in calls:
                # execute_command: redis-py's cluster pipeline refuses its evalsha method,
                # though it routes EVALSHA by its keys like any keyed command.
                pipe.execute_command(*self.evalsha_command(call))
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies


class ClusterHost(_RedisPyPipeline, Host):
    """A whole Redis Cluster as one host: the cluster client routes each script call and
    publish to the master owning its slot (all of a call's keys share one, see
    ``_protocol/keys.py``), a pipeline goes out as one per master, and the subscriber
    is a :class:`~.sharded.ShardedSubscriber` (``SSUBSCRIBE`` per owning master)."""

    def __init__(
        self,
        specs: tuple[dict[str, Any], ...],
        on_message: MessageHandler,
        backoff: Backoff,
        limits: PoolLimits = DEFAULT_LIMITS,
        on_connection: ConnectionHandler | None = None,
        on_acknowledged: AckHandler | None = None,
        write_timeout: float | None = None,
    ) -> None:
        self.watch = None
        self.client = make_cluster_client(specs, limits)
        self.subscriber = ShardedSubscriber(self.client, on_message, backoff=backoff,
                                            on_connection=on_connection,
                                            on_acknowledged=on_acknowledged)  # fmt: skip
        self.writer = OrderedWriter(self.run_all, write_timeout, batch.scope, WRITE_DEPTH)
        self.publisher = Publisher(self.client, publish_command(sharded=True),
                                   route=self._owner)  # fmt: skip
        self._shas = {}
        self._loaded = set()

    @staticmethod
    def _slot(call: Call[Any]) -> Hashable:
        """Which calls may share a batch: those whose keys are in one slot."""
        return key_slot(call.keys[0].encode()) if call.keys else None

    def _owner(self, channel: str) -> Any:
        """The master the slot map names for a channel (None before the map is read)."""
        try:
            node = self.client.get_node_from_key(channel)
        except Exception:  # no slot map yet: one batch, which redis-py routes itself
            return None
        return None if node is None else node.name

    async def close_pools(self) -> None:
        """Close the command connections (the client reconnects on next use)."""
        await self.client.aclose()

    async def close(self) -> None:
        """Stop the writers and the subscriber, close every connection (idempotent)."""
        await self.publisher.close()
        await self.writer.close()
        await self.subscriber.close()
        await self.client.aclose()


class SyncHost:
    """A synchronous client to one host, with its scripts registered once (thread-safe)."""

    def __init__(
        self,
        spec: dict[str, Any] | tuple[dict[str, Any], ...],
        limits: PoolLimits = DEFAULT_LIMITS,
    ) -> None:
        """One server's ``hosts`` entry, or every entry of a cluster's (a tuple)."""
        self.client: Any
        cluster = isinstance(spec, tuple)
        if isinstance(spec, tuple):
            self.client = make_sync_cluster_client(spec, limits)
        else:
            self.client = make_sync_client(spec, limits)
        self._publish = publish_command(sharded=cluster)
        self._scripts: dict[str, Any] = {}

    def run(self, call: Call[T]) -> T:
        """Run one script call, retried as retry.py allows; errors become RedisUnavailable."""
        script = self._scripts.get(call.script)
        if script is None:
            script = self._scripts[call.script] = self.client.register_script(call.script)
        run = functools.partial(script, keys=list(call.keys), args=list(call.args))
        recorder = _metrics.recorder
        started = time.perf_counter() if recorder.enabled else 0.0
        with sync_redis_errors():
            reply = retry.call_sync(run, idempotent=call.idempotent, what="EVALSHA")
        if recorder.enabled:
            recorder.registry_call(script_name(call.script), started)
        return call.parse(reply)

    def run_plan(self, plan: Plan[T]) -> T:
        """Run a plan's steps in turn, one call at a time; a failed call fails the plan."""
        try:
            calls = next(plan)
            while True:
                calls = plan.send([self.run(call) for call in calls])
        except StopIteration as stop:
            result: T = stop.value
            return result

    def publish(self, channel: str, data: bytes) -> int:
        """PUBLISH (retried only when it was not sent); return how many subscribers got it."""
        with sync_redis_errors():
            return int(
                retry.call_sync(
                    functools.partial(self.client.execute_command, self._publish, channel, data),
                    idempotent=False,
                    what=self._publish,
                )
            )

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()


def _raise_first(results: list[Any]) -> list[Any]:
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results
