"""The sender role: group_send / send as fast as possible or at a fixed rate, and queries.

Message ``i`` of a run goes to ``targets[i % T]`` with sequence number ``i // T``; with
several sending tasks, task ``j`` sends ``i = j, j + tasks, ...`` and tags them with
source ``j``, so receivers can check order per (member, source).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import redis.asyncio
from channels.exceptions import ChannelFull

from . import wire
from .layers import close_layer, make_layer
from .worker import Pipe, cpu_now, cpu_since, message

SENDER_OPS = frozenset({"probe", "run", "capacity", "query"})


class Sender:
    """Sends on one layer instance as the harness commands."""

    def __init__(self, layer: Any, pipe: Pipe) -> None:
        self.layer = layer
        self.pipe = pipe

    async def handle(self, command: dict[str, Any]) -> None:
        op = command["op"]
        if op == "probe":
            await self.probe(command)
        elif op == "run":
            await self.run(command)
        elif op == "capacity":
            await self.capacity(command)
        elif op == "query":
            await self.query(command)
        else:
            raise ValueError(f"sender: unknown command {op!r}")

    def _send(self, command: dict[str, Any]) -> tuple[Any, list[str]]:
        if command.get("channels"):
            return self.layer.send, command["channels"]
        return self.layer.group_send, command["groups"]

    async def probe(self, command: dict[str, Any]) -> None:
        send, targets = self._send(command)
        lanes = command.get("concurrency", 1)

        async def lane(start: int) -> None:
            for target in targets[start::lanes]:
                await send(target, message("p"))

        await asyncio.gather(*(lane(i) for i in range(lanes)))
        self.pipe.send("probe_sent")

    async def run(self, command: dict[str, Any]) -> None:
        send, targets = self._send(command)
        count, tasks = command["count"], command.get("tasks", 1)
        accepted = [0] * len(targets)
        full = 0
        rate = command.get("rate")
        behind = 0.0
        cpu0, wire0 = cpu_now(), wire.snapshot()
        started = time.monotonic()

        async def lane(source: int) -> None:
            nonlocal full, behind
            for i in range(source, count, tasks):
                if rate:
                    delay = started + i / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)  # pacing timer
                    else:
                        behind = max(behind, -delay)
                target = i % len(targets)
                try:
                    await send(targets[target], message("b", source, i // len(targets)))
                    accepted[target] += 1
                except ChannelFull:
                    full += 1

        await asyncio.gather(*(lane(j) for j in range(tasks)))
        finished = time.monotonic()
        await self.end(send, targets)
        self.pipe.send(
            "sent",
            started=started,
            finished=finished,
            ended=time.monotonic(),
            sends=count,
            ends=len(targets),
            accepted=accepted,
            full=full,
            behind=behind,
            **cpu_since(cpu0),
            wire=wire.delta(wire0),
        )

    async def end(self, send: Any, targets: list[str]) -> None:
        """One end marker per target; a full channel gets a few retries, then is skipped."""
        for target in targets:
            for _ in range(50):
                try:
                    await send(target, message("e"))
                    break
                except ChannelFull:
                    await asyncio.sleep(0.02)

    async def capacity(self, command: dict[str, Any]) -> None:
        """Send ``count`` messages to a channel nobody reads: how many are refused?"""
        accepted = full = 0
        for _ in range(command["count"]):
            try:
                await self.layer.send(command["channel"], message("c"))
                accepted += 1
            except ChannelFull:
                full += 1
        self.pipe.send("capacity_done", accepted=accepted, full=full)

    async def query(self, command: dict[str, Any]) -> None:
        """Run one registry query ``n`` times; report each one's latency and size.

        ``raw_zrange`` and ``raw_hgetall`` are the baselines: the same data read with
        one plain redis-py command (``key``) on a client of the sender's own.
        """
        registry = self.layer.registry
        kind, group = command["kind"], command.get("group", "")
        raw = redis.asyncio.Redis.from_url(command["url"]) if kind.startswith("raw_") else None
        latencies, sizes = [], []
        wire0 = wire.snapshot()
        try:
            for i in range(command["n"] + 1):  # the first one loads the script: not counted
                if i == 1:
                    latencies, sizes, wire0 = [], [], wire.snapshot()
                started = time.perf_counter()
                if kind == "room_size":
                    sizes.append(await registry.room_size(group))
                elif kind == "members":
                    sizes.append(len(await registry.members(group)))
                elif raw is not None and kind == "raw_zrange":
                    sizes.append(len(await raw.zrange(command["key"], 0, -1, withscores=True)))
                elif raw is not None and kind == "raw_hgetall":
                    sizes.append(len(await raw.hgetall(command["key"])))
                else:
                    offset = random.randrange(command["total"] - command["limit"])
                    page = await registry.rooms(offset=offset, limit=command["limit"])
                    sizes.append(len(page.rooms))
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            if raw is not None:
                await raw.aclose()
        self.pipe.send("query_done", latencies=latencies, sizes=sizes, wire=wire.delta(wire0))


async def run_sender(pipe: Pipe, job: dict[str, Any]) -> None:
    """The sender role: build the layer, then serve the harness's commands."""
    layer = make_layer(job["layer"], job["url"], job["prefix"], job["capacity"])
    sender = Sender(layer, pipe)
    pipe.send("sender_ready")
    try:
        while (command := await pipe.recv())["op"] != "teardown":
            await sender.handle(command)
    finally:
        await close_layer(job["layer"], layer)
