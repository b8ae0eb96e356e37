"""A benchmark worker process: runs one role (node or sender) per job sent by the harness.

Workers are started once with multiprocessing's ``spawn`` and reused across runs, so
each run pays no interpreter start-up. Every job gets a fresh event loop and a fresh
layer instance, which are closed before the worker reports ``job_done``.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from . import wire

#: The body every benchmark message carries, so all layers move the same payload.
PAYLOAD = "x" * 64


def message(kind: str, source: int = 0, seq: int = 0) -> dict[str, Any]:
    """A benchmark message: ``k`` is b(ench), p(robe) or e(nd); ``t`` the send time."""
    return {
        "type": "bench.message",
        "k": kind,
        "s": source,
        "q": seq,
        "t": time.monotonic(),
        "p": PAYLOAD,
    }


def cpu_now() -> tuple[float, float]:
    """This process's user and system CPU seconds so far."""
    times = os.times()
    return times.user, times.system


def cpu_since(start: tuple[float, float]) -> dict[str, float]:
    """CPU used since ``start``: ``cpu`` (user + system) and ``cpu_sys`` (system alone)."""
    user, system = cpu_now()
    return {"cpu": user - start[0] + system - start[1], "cpu_sys": system - start[1]}


class Pipe:
    """The worker's end of its pipe to the harness, readable without blocking the loop."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def send(self, op: str, **fields: Any) -> None:
        self._conn.send({"op": op, **fields})

    async def recv(self) -> dict[str, Any]:
        if not self._conn.poll():
            loop = asyncio.get_running_loop()
            readable = loop.create_future()
            fd = self._conn.fileno()
            loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
            try:
                await readable
            finally:
                loop.remove_reader(fd)
        command: dict[str, Any] = self._conn.recv()
        return command


def worker_main(conn: Connection) -> None:
    """Entry point of a worker process: run jobs until told to exit."""
    wire.install()
    from .node_role import run_node
    from .sender_role import run_sender

    roles = {"node": run_node, "sender": run_sender}
    while True:
        job = conn.recv()
        if job["op"] == "exit":
            return
        try:
            asyncio.run(roles[job["role"]](Pipe(conn), job))
        except Exception:
            conn.send({"op": "error", "error": traceback.format_exc()})
        conn.send({"op": "job_done"})
