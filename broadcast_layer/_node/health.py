"""The health probe: a round trip through a node's own pub/sub connection.

:meth:`Probe.check` publishes ``?<token>`` on the node's channel and waits until the
node's reader task hands it back (:meth:`Probe.answer`), so a passing probe proves that
Redis takes publishes and that the read loop delivers them. It never raises (but a
cancellation of its caller) and never outlives its timeout by more than a moment.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from .._protocol.control import PROBE_MARK
from .core import NodeCore


@dataclass(frozen=True)
class Health:
    """The result of one health probe. ``ok`` is all a load balancer needs."""

    ok: bool
    node_id: str
    #: Seconds from PUBLISH to the probe coming back on the read loop (None: it did not).
    latency: float | None
    timeout: float
    #: The state of each host's pub/sub connection, in ``hosts`` order (idle, connecting,
    #: connected, closed).
    pubsub: tuple[str, ...] = ()
    #: Why the probe failed (None when ``ok``).
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        fields = asdict(self)
        fields["pubsub"] = list(self.pubsub)
        return fields


class Probe:
    """Sends probes on one node's channel and completes them when they come back."""

    def __init__(self, core: NodeCore) -> None:
        self._core = core
        self._waiting: dict[bytes, asyncio.Future[float]] = {}

    def answer(self, payload: bytes) -> None:
        """A probe read on the node's channel (on the reader task: never blocks)."""
        waiter = self._waiting.pop(payload, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())

    async def check(self, timeout: float) -> Health:
        """Probe the node; an answer within ``timeout`` seconds whatever Redis does."""
        core = self._core
        task = core.spawn(self._round_trip())  # owned by the node: close() awaits it
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if done:
            latency, error = task.result()
        else:
            task.cancel()  # a hung redis-py call may swallow this; the node owns the task
            latency, error = None, f"no answer within {timeout:g}s"
        states = tuple(host.subscriber.state.value for host in core.hosts)
        return Health(ok=error is None, node_id=core.id, latency=latency, timeout=timeout,
                      pubsub=states, error=error)  # fmt: skip

    async def _round_trip(self) -> tuple[float | None, str | None]:
        core = self._core
        payload = PROBE_MARK + secrets.token_hex(8).encode()
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        try:
            await core.listen()
            self._waiting[payload] = waiter
            started = time.perf_counter()
            await core.host_for(core.id).publisher.publish(core.node_channel, payload)
            return await waiter - started, None
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            self._waiting.pop(payload, None)
