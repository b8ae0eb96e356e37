"""The node role: one layer instance with many members, each a new_channel() and a task.

A node counts what its members receive in a :class:`Tracker` per phase and reports
it to the harness; readiness is proven by probe messages reaching every member.
Churn (group_add/group_discard) is also run here, by the node owning the channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from array import array
from typing import Any

from . import wire
from .layers import LOCAL_LAYERS, close_layer, make_layer
from .sender_role import SENDER_OPS, Sender
from .worker import Pipe, cpu_now, cpu_since


class Tracker:
    """What one node's members received during one phase."""

    def __init__(self, members: int, expected: int, stride: int) -> None:
        self.members = members
        self.expected = expected
        self.stride = stride
        self.seen = [bytearray(expected) for _ in range(members)]
        self.last_seq: list[dict[int, int]] = [{} for _ in range(members)]
        self.unique = self.dups = self.out_of_order = self.bad = self.ended = 0
        self.first: float | None = None
        self.last = 0.0
        self.latencies = array("d")
        self.done = asyncio.Event()

    def bench(self, idx: int, message: dict[str, Any], now: float) -> None:
        seq = message["q"]
        if not 0 <= seq < self.expected:
            self.bad += 1
            return
        seen = self.seen[idx]
        if seen[seq]:
            self.dups += 1
            return
        seen[seq] = 1
        self.unique += 1
        last = self.last_seq[idx]
        source = message["s"]
        if seq < last.get(source, -1):
            self.out_of_order += 1
        else:
            last[source] = seq
        if self.first is None:
            self.first = now
        self.last = now
        if idx % self.stride == 0:
            self.latencies.append(now - message["t"])

    def end(self) -> None:
        self.ended += 1
        if self.ended >= self.members:
            self.done.set()

    def report(self) -> dict[str, Any]:
        return {
            "unique": self.unique,
            "dups": self.dups,
            "out_of_order": self.out_of_order,
            "bad": self.bad,
            "ended": self.ended,
            "first": self.first,
            "last": self.last,
            "latencies": self.latencies,
        }


class Node:
    """A node process's state for one job."""

    def __init__(self, pipe: Pipe, job: dict[str, Any]) -> None:
        self.pipe = pipe
        self.job = job
        self.kind = job["layer"]
        self.layer = make_layer(self.kind, job["url"], job["prefix"], job["capacity"])
        self.sender = Sender(self.layer, pipe) if self.kind in LOCAL_LAYERS else None
        self.channels: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.tracker: Tracker | None = None
        self.probed = bytearray()
        self.probed_count = 0
        self.stray = 0
        self.sender_done_at: float | None = None

    # -- setup and teardown ------------------------------------------------------------

    async def setup(self) -> None:
        job = self.job
        self.channels = [await self.layer.new_channel() for _ in range(job["members"])]
        stalled = [await self.layer.new_channel() for _ in range(job.get("stalled", 0))]
        if job.get("receivers", True):
            self.tasks = [
                asyncio.create_task(self.member(i, c)) for i, c in enumerate(self.channels)
            ]
        groups_of = job.get("groups_of")
        if groups_of:
            await self.apply("group_add", groups_of, job.get("join_concurrency", 32))
        node_id = getattr(self.layer, "node_id", None) if self.kind == "broadcast" else None
        self.pipe.send("setup_done", channels=self.channels, stalled=stalled, node_id=node_id)

    async def teardown(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await close_layer(self.kind, self.layer)

    async def apply(self, op: str, groups_of: list[list[str]], concurrency: int) -> int:
        """``op`` every (group, member) pair: ``concurrency`` lanes, each one member at a time."""
        method = getattr(self.layer, op)
        channels = self.channels

        async def lane(start: int) -> int:
            done = 0
            for idx in range(start, len(groups_of), concurrency):
                for group in groups_of[idx]:
                    await method(group, channels[idx])
                    done += 1
            return done

        return sum(await asyncio.gather(*(lane(i) for i in range(concurrency))))

    # -- members -----------------------------------------------------------------------

    async def member(self, idx: int, channel: str) -> None:
        try:
            await self._member(idx, channel)
        except Exception:  # a dead member would only show up as "lost": say why
            self.pipe.send("error", error=traceback.format_exc())
            raise

    async def _member(self, idx: int, channel: str) -> None:
        receive = self.layer.receive
        monotonic = time.monotonic
        while True:
            message = await receive(channel)
            now = monotonic()
            kind = message["k"]
            tracker = self.tracker
            if kind == "b":
                if tracker is None:
                    self.stray += 1
                else:
                    tracker.bench(idx, message, now)
            elif kind == "p":
                self.probe(idx)
            elif kind == "e" and tracker is not None:
                tracker.end()

    def probe(self, idx: int) -> None:
        if idx < len(self.probed) and not self.probed[idx]:
            self.probed[idx] = 1
            self.probed_count += 1
            if self.probed_count == len(self.probed):
                self.pipe.send("probed")

    # -- commands ----------------------------------------------------------------------

    async def serve(self) -> None:
        while True:
            command = await self.pipe.recv()
            op = command["op"]
            if op == "teardown":
                return
            if op == "probe_arm":
                self.probed = bytearray(len(self.channels))
                self.probed_count = 0
                self.pipe.send("probe_armed")
            elif op == "arm":
                self.arm(command)
            elif op == "sender_done":
                self.sender_done_at = time.monotonic()
            elif op == "churn":
                await self.churn(command)
            elif op in SENDER_OPS and self.sender is not None:
                await self.sender.handle(command)
            else:
                raise ValueError(f"node: unknown command {op!r}")

    def arm(self, command: dict[str, Any]) -> None:
        self.tracker = Tracker(len(self.channels), command["expected"], command["stride"])
        self.sender_done_at = None
        task = asyncio.create_task(self.monitor(self.tracker, command["deadline"], command["idle"]))
        self.tasks.append(task)
        self.pipe.send("armed")

    async def monitor(self, tracker: Tracker, deadline: float, idle: float) -> None:
        """Report the phase when every member saw its end marker, or on deadline / idleness."""
        cpu0, wire0, dropped0 = cpu_now(), wire.snapshot(), self.dropped()
        started = time.monotonic()
        stop = "complete"
        while not tracker.done.is_set():
            now = time.monotonic()
            quiet_since = max(tracker.last, self.sender_done_at or now)
            if now - started > deadline:
                stop = "deadline"
                break
            if self.sender_done_at is not None and now - quiet_since > idle:
                stop = "idle"
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):  # only to notice loss: completion wakes at once
                    await tracker.done.wait()
        self.tracker = None
        self.pipe.send(
            "phase_result",
            stop=stop,
            **cpu_since(cpu0),
            wire=wire.delta(wire0),
            dropped=self.dropped() - dropped0,
            stray=self.stray,
            **tracker.report(),
        )

    def dropped(self) -> int:
        return int(self.layer.stats().dropped) if self.kind == "broadcast" else 0

    async def churn(self, command: dict[str, Any]) -> None:
        cpu0, wire0 = cpu_now(), wire.snapshot()
        started = time.monotonic()
        ops = await self.apply(command["action"], command["groups_of"], command["concurrency"])
        finished = time.monotonic()
        self.pipe.send(
            "churn_done",
            ops=ops,
            started=started,
            finished=finished,
            **cpu_since(cpu0),
            wire=wire.delta(wire0),
        )


async def run_node(pipe: Pipe, job: dict[str, Any]) -> None:
    """The node role: set up members, serve the harness's commands, tear down."""
    node = Node(pipe, job)
    try:
        await node.setup()
        await node.serve()
    finally:
        await node.teardown()
