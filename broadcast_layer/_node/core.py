"""What every part of one node shares: its id, key names, hosts, tasks and lifecycle state.

A node is created per event loop. Its parts (channels, groups, control, delivery,
upkeep, the registry writer) each hold this core instead of holding each other, and
the core owns every background task: :meth:`NodeCore.close_tasks` cancels and awaits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .._metrics import STAMP
from .._protocol.keys import Keys, shard_index
from .._protocol.records import RecordCalls
from .._redis.host import ClusterHost, Host
from .._redis.subscriber import MessageHandler
from ..conf import LayerConfig

T = TypeVar("T")


class NodeCore:
    """One node's identity and shared resources (no Redis traffic of its own but :meth:`listen`)."""

    def __init__(
        self,
        config: LayerConfig,
        serializer: Any,
        on_message: MessageHandler,
        on_connection: Callable[[Host, bool], None] | None = None,
        on_acknowledged: Callable[[bytes], None] | None = None,
    ) -> None:
        """``on_connection(host, lost)``: a host's pub/sub connection was lost or is back.
        ``on_acknowledged(channel)``: on a cluster, a master acknowledged a subscription
        (again); see ``ShardedSubscriber``."""
        self.config = config
        self.id = uuid.uuid4().hex[:16]
        self.keys = Keys(config.prefix, config.cluster)
        self.calls = RecordCalls(self.keys, config.node_ttl)
        self.node_channel = self.keys.node_channel(self.id)
        self._serializer = serializer
        self._on_connection = on_connection
        self.hosts: list[Host] = (
            [ClusterHost(config.hosts, on_message, config.reconnect_backoff, config.pool_limits,
                         functools.partial(self._connection_changed, 0), on_acknowledged,
                         write_timeout=config.subscribe_timeout)]
            if config.cluster
            else [Host(spec, on_message, config.reconnect_backoff, config.failover_timeout,
                       config.pool_limits, functools.partial(self._connection_changed, index),
                       write_timeout=config.subscribe_timeout)
                  for index, spec in enumerate(config.hosts)]
        )  # fmt: skip
        self.registry_host = self.hosts[0]  # the registry lives on the first host
        self.started = time.time()
        #: This node may have records in the registry (it listened, joined or re-asserted).
        self.registered = False
        self._birth: asyncio.Future[int] | None = None
        self.listening = False
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._background_started = False

    def host_for(self, name: str) -> Host:
        """The host a group, a normal channel or a node id is placed on."""
        return self.hosts[shard_index(name, len(self.hosts))]

    def decode(self, data: bytes) -> dict[str, Any]:
        """Deserialize a message as the layer's serializer wrote it (without its send time)."""
        message: dict[str, Any] = self._serializer.deserialize(data)
        message.pop(STAMP, None)  # a group message forwarded to a queue keeps its stamp
        return message

    def decode_stamped(self, data: bytes) -> tuple[dict[str, Any], float | None]:
        """Deserialize a group message; also return its send time (None: not stamped)."""
        message: dict[str, Any] = self._serializer.deserialize(data)
        sent = message.pop(STAMP, None)
        return message, sent if isinstance(sent, float) else None

    def _connection_changed(self, index: int, lost: bool) -> None:
        if self._on_connection is not None:
            self._on_connection(self.hosts[index], lost)

    def encode(self, message: dict[str, Any]) -> bytes:
        """Serialize a message as the layer's serializer does (no size or shape checks)."""
        data: bytes = self._serializer.serialize(message)
        return data

    def reconnects(self) -> int:
        """Pub/sub reconnects of all hosts so far."""
        return sum(host.subscriber.reconnects for host in self.hosts)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a task this node owns (cancelled and awaited on close)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def add_background(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A loop started by :meth:`start_background` (the release loop, the upkeep)."""
        self._background.append(loop)

    def start_background(self) -> None:
        """Start the background loops, once."""
        if not self._background_started:
            self._background_started = True
            for loop in self._background:
                self.spawn(loop())

    def register(self) -> asyncio.Future[int] | None:
        """Before this node's first record: submit its birth record (once), else None.

        The birth goes through the registry's ordered writer, so Redis has the node's
        record, with its generation, before any other record of the node: a healthy new
        node never looks as if Redis had lost its records. The future is the write's.
        """
        if self.registered:
            return None
        self.registered = True
        birth = self.calls.heartbeat(self.id, self.started, 0, birth=True)
        self._birth = self.registry_host.writer.submit(birth)
        return self._birth

    @property
    def beating(self) -> bool:
        """Whether the heartbeat loop refreshes this node's record: it has records, and
        its birth is not still on its way. A heartbeat goes out on its own, so one sent
        before the birth could reach Redis first, find no generation and make the node
        re-assert for nothing. A birth that failed (Redis did not confirm it within
        ``subscribe_timeout``; the writer still sends it in its turn) leaves the record
        to the heartbeat, which may then overtake it: one re-assert, which repairs all."""
        return self.registered and (self._birth is None or self._birth.done())

    async def listen(self) -> None:
        """Subscribe to this node's channel and publish its record (once)."""
        if not self.listening:
            subscriber = self.host_for(self.id).subscriber
            await subscriber.want([self.node_channel])
            born = self.register()
            subscribed = subscriber.wait_subscribed(
                self.node_channel, self.config.subscribe_timeout
            )
            # The writer fails the birth if Redis does not confirm it in subscribe_timeout.
            await (subscribed if born is None else both(subscribed, born))
            self.listening = True
            self.start_background()

    async def close_tasks(self) -> None:
        """Mark the node closed, then cancel and await every task it owns."""
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def both(first: Awaitable[Any], second: Awaitable[Any]) -> None:
    """Run two awaitables concurrently, wait for both, re-raise the first failure."""
    results = await asyncio.gather(first, second, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
