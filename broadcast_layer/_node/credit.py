"""Credit: how many more sends from other nodes each local channel near capacity takes.

A send from another node is one script that reads the channel's credit key and
publishes (SEND_TO_NODE). The key exists only while the channel's mailbox is near
capacity. This node writes it when a send from another node finds the mailbox holding
``capacity - slack`` letters or more (the *high* mark), keeps it equal to the capacity
minus the letters queued (group messages included) and the sends on their way, and
deletes it once the mailbox is back to half the high mark. Below the high mark nothing
is counted; the slack takes the sends already on their way when the key is written. A
channel whose capacity is at most its slack is counted from the start.

The key is exact because the node knows which arrivals it counted. A write that sets the
key outright also publishes a *marker* on the node's channel: every send that arrives
before the marker was made before the write, so the key did not count it; every send
that arrives after it took its credit from the key. All writes go out from one
background loop, one CREDIT call per wake-up (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from .._protocol import records, scripts
from .._redis import retry
from .._redis.errors import CONNECTION_ERRORS
from .._redis.host import Host
from .._redis.retry import raise_if_cancelled
from .core import NodeCore
from .mailbox import Mailbox

logger = logging.getLogger(__name__)

#: The least slack a channel gets: sends taken uncounted once its node counts them.
MIN_SLACK = 16
#: Channels per CREDIT call (Redis runs nothing else while a script runs).
CHUNK = 500

Op = tuple[str, str]


def slack(capacity: int) -> int:
    """Sends to a channel of ``capacity`` that may be on their way, uncounted, when its
    node starts counting, without the channel going past its capacity."""
    return max(MIN_SLACK, capacity // 2)


def limit(capacity: int) -> int:
    """How many letters the mailbox keeps for sends from other nodes: sends already
    accepted when the count reached Redis overshoot the capacity by up to
    ``capacity + slack`` before any is dropped."""
    return 2 * capacity + slack(capacity)


def low_mark(mailbox: Mailbox) -> int:
    """The length at which a counted mailbox stops being counted (-1: never)."""
    return mailbox.high // 2 if mailbox.high > 0 else -1


@dataclass(slots=True)
class _Account:
    """What this node knows of one channel's credit key."""

    mailbox: Mailbox
    #: The marker this node waits for since it wrote the key outright (0: none). Until it
    #: arrives, arriving sends were made before the write: the key did not count them.
    marker: int
    #: The mailbox's length when the key was last written.
    reported: int
    #: Sends from other nodes that arrived since then and took their credit from the key.
    credited: int = 0
    #: False when the key's value is unknown (a failed write, a lost key): write it outright.
    known: bool = True


class Credit:
    """Keeps the credit keys of this node's channels; one background loop writes them."""

    def __init__(self, core: NodeCore) -> None:
        self._core = core
        self._accounts: dict[str, _Account] = {}
        self._changed: dict[str, Mailbox] = {}
        self._deletes: set[str] = set()  # keys of channels no longer counted, to delete
        self._renew = False
        self._marker = 0
        self._wanted = asyncio.Event()

    def mailbox(self, name: str, capacity: int) -> Mailbox:
        """A mailbox for the local channel ``name``, watched by this keeper."""
        return Mailbox(capacity, name=name, limit=limit(capacity),
                       high=capacity - slack(capacity), watch=self.changed)  # fmt: skip

    async def open(self, mailbox: Mailbox) -> None:
        """Write the key of a new channel counted from the start (capacity at most its
        slack), before any sender knows its name; nothing to do for other channels."""
        if mailbox.high > 0:
            return
        core = self._core
        op = (mailbox.name, f"={mailbox.capacity}")
        call = records.credit(core.keys, core.id, [op], core.config.node_ttl, None)
        await self._host().run(call)
        self._accounts[mailbox.name] = _Account(mailbox, marker=0, reported=0)
        mailbox.watched = True

    def changed(self, mailbox: Mailbox) -> None:
        """The mailbox's watch: look at its credit in the next write."""
        self._changed[mailbox.name] = mailbox
        self._wanted.set()

    def arrived(self, channel: str) -> None:
        """A send from another node to ``channel`` arrived (queued or not)."""
        account = self._accounts.get(channel)
        if account is not None and not account.marker:
            account.credited += 1
            if len(account.mailbox) >= account.mailbox.capacity:
                # The key let a send through to a full mailbox: Redis lost it (a restart,
                # FLUSHALL), or group messages filled the room meanwhile. Write it outright.
                account.known = False
            self.changed(account.mailbox)

    def marker(self, payload: bytes) -> None:
        """A marker arrived: later sends to the channels it covers took their credit."""
        try:
            seen = int(payload[1:])
        except ValueError:
            return
        for account in self._accounts.values():
            if 0 < account.marker <= seen:
                account.marker = 0

    def forget(self, channel: str) -> None:
        """The channel was abandoned: delete its key, if it has one."""
        self._changed.pop(channel, None)
        if self._accounts.pop(channel, None) is not None:
            self._deletes.add(channel)
            self._wanted.set()

    def renew(self) -> None:
        """Renew the TTL of every key in the next write (each upkeep tick)."""
        if self._accounts:
            self._renew = True
            self._wanted.set()

    def resync(self) -> None:
        """Write every key outright: the node's pub/sub connection came back, and a
        marker or sends may have been lost meanwhile."""
        for name, account in self._accounts.items():
            account.known = False
            self._changed[name] = account.mailbox
        self._wanted.set()

    def wake(self) -> None:
        """Wake the loop so it sees the node closed."""
        self._wanted.set()

    async def run(self) -> None:
        """The write loop: one batch of CREDIT calls per wake-up, until the node closes."""
        # Checks `closed` as well as relying on cancellation: redis-py's pipeline can
        # swallow a CancelledError that lands inside execute().
        core = self._core
        retrying = retry.Retrying(core.config.reconnect_backoff)
        try:  # so the first write, when a channel fills, is one round trip
            await self._host().load({scripts.CREDIT})
        except CONNECTION_ERRORS as exc:  # the first write loads it
            logger.debug("Could not load the CREDIT script yet: %s", exc)
        # A cancellation redis-py swallowed (Python 3.11's wait_for, in the handshake of
        # a new connection, can) would leave this task waiting below for ever, and
        # asyncio.run() waiting for it: the node's first call often runs as its loop ends.
        raise_if_cancelled()
        while not core.closed:
            await self._wanted.wait()
            self._wanted.clear()
            ops, marker = self._operations()
            if not ops:
                continue
            try:
                results = await self._write(ops, marker)
            except CONNECTION_ERRORS as exc:
                raise_if_cancelled()
                self._unknown(ops)
                delay = retrying.next_delay()
                logger.warning("Could not write channel credit (%s); retrying in %.2fs",
                               exc, delay)  # fmt: skip
                await asyncio.sleep(delay)  # backoff during an outage, not a poll
                continue
            raise_if_cancelled()
            retrying.reset()
            self._check(ops, results)

    async def close(self) -> None:
        """Delete every key this node wrote (best effort: the rest expire with the TTL)."""
        names = [*self._accounts, *self._deletes]
        self._accounts.clear()
        self._deletes.clear()
        self._changed.clear()
        if not names:
            return
        try:
            await self._write([(name, "x") for name in names], None)
        except CONNECTION_ERRORS as exc:
            raise_if_cancelled()
            logger.warning("Could not delete channel credit on close: %s", exc)

    def _host(self) -> Host:
        return self._core.host_for(self._core.id)  # with the node's channel

    def _operations(self) -> tuple[list[Op], int | None]:
        """What to write now (and empty the queues); the marker, if a key is set outright."""
        marker = self._marker + 1
        ops: list[Op] = [(name, "x") for name in self._deletes if name not in self._accounts]
        self._deletes.clear()
        changed, self._changed = self._changed, {}
        for name, mailbox in changed.items():
            op = self._operation(name, mailbox, marker)
            if op is not None:
                ops.append((name, op))
        if self._renew:
            self._renew = False
            written = {name for name, _ in ops}
            ops += [(name, "~") for name in self._accounts if name not in written]
        if not any(op.startswith("=") for _, op in ops):
            return ops, None
        self._marker = marker
        return ops, marker

    def _operation(self, name: str, mailbox: Mailbox, marker: int) -> str | None:
        """The write one channel needs: set, add, delete, or none."""
        fill = len(mailbox)
        account = self._accounts.get(name)
        if account is None:
            if fill < mailbox.high:
                return None
            self._accounts[name] = _Account(mailbox, marker=marker, reported=fill)
            mailbox.watched = True
            return f"={mailbox.capacity - fill}"
        if fill <= low_mark(mailbox):
            del self._accounts[name]
            mailbox.watched = False
            return "x"
        if not account.known:
            account.known, account.marker = True, marker
            account.reported, account.credited = fill, 0
            return f"={mailbox.capacity - fill}"
        # Letters that came or went without taking credit from the key: group messages,
        # local sends, sends made before the key was set, receives.
        delta = account.reported - fill + account.credited
        account.reported, account.credited = fill, 0
        return f"{delta:+d}" if delta else None

    async def _write(self, ops: list[Op], marker: int | None) -> list[list[bool] | Exception]:
        """Run ``ops`` in CREDIT calls of :data:`CHUNK`, in one pipeline; the marker with
        the last, so it is published after every write."""
        core = self._core
        chunks = [ops[start : start + CHUNK] for start in range(0, len(ops), CHUNK)]
        last = len(chunks) - 1
        calls = [records.credit(core.keys, core.id, chunk, core.config.node_ttl,
                                marker if i == last else None)
                 for i, chunk in enumerate(chunks)]  # fmt: skip
        return await self._host().run_all(calls)

    def _check(self, ops: list[Op], results: list[list[bool] | Exception]) -> None:
        """Keys found missing, and calls that failed, are written outright next time."""
        for start, result in zip(range(0, len(ops), CHUNK), results, strict=True):
            chunk = ops[start : start + CHUNK]
            if isinstance(result, Exception):
                logger.warning("Could not write channel credit: %s", result)
                self._unknown(chunk)
                continue
            for (name, op), exists in zip(chunk, result, strict=True):
                if not exists and op[0] in "+-~":  # lost with Redis's data, or expired
                    self._unknown([(name, op)])

    def _unknown(self, ops: list[Op]) -> None:
        for name, op in ops:
            account = self._accounts.get(name)
            if account is not None:
                account.known = False
                self._changed[name] = account.mailbox
            elif op == "x":
                self._deletes.add(name)
        self._wanted.set()
