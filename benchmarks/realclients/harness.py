"""The harness's processes: two server nodes (plus the demo's worker) and the client processes.

Every wait is bounded; a process that does not answer in time fails the run, and
everything started is stopped whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
import redis
from websockets.asyncio.client import connect

from ..harness import redis_cpu_seconds
from .client import client_main

ROOT = Path(__file__).resolve().parents[2]


class BenchError(RuntimeError):
    """A process failed, or did not answer in time."""


@dataclass(frozen=True)
class Target:
    """What serves the clients: which application, on which server and layer, with which GC."""

    name: str
    app: str  # "demo" or "plain"
    server: str  # "daphne" or "uvicorn"
    layer: str  # "broadcast" or "pubsub"
    gc: str = "default"
    variant: bool = False  # a GC variant: run only at the C values of --gc-at


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"node on :{port} exited:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)  # a server starting up: nothing to block on
    raise BenchError(f"node on :{port} did not listen within {timeout:.0f}s")


async def _warm_up(port: int) -> None:
    """One chat line through a node, so the first measured client pays no first-use costs."""
    url, origin = f"ws://127.0.0.1:{port}/ws/chat/warm-up/", f"http://127.0.0.1:{port}"
    async with asyncio.timeout(60):
        async with connect(url, origin=origin, compression=None) as ws:  # type: ignore[arg-type]
            await ws.send('{"text": "warm-up 0"}')
            while json.loads(await ws.recv()).get("type") != "message":
                pass


class Nodes:
    """Two server nodes of one target (and, for the demo, its command worker)."""

    def __init__(self, target: Target, redis_url: str, workdir: Path) -> None:
        self.target = target
        self.ports = [free_port(), free_port()]
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stats_paths = [workdir / f"gc-node{i}.json" for i in range(2)]
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DEMO_PORTS": ",".join(map(str, self.ports)),
            "DJANGO_SECRET_KEY": "benchmark-only",
            "DJANGO_DEBUG": "0",
            "DEMO_DB_PATH": str(workdir / "demo.sqlite3"),
            "BENCH_LAYER": target.layer,
            "DJANGO_SETTINGS_MODULE": (
                "demo_chat.settings" if target.app == "demo"
                else "benchmarks.realclients.plain_settings"
            ),
        }  # fmt: skip

    def start(self) -> None:
        for i, port in enumerate(self.ports):
            log = self.workdir / f"node{i}.log"
            command = [sys.executable, "-m", "benchmarks.realclients.node",
                       "--server", self.target.server, "--app", self.target.app,
                       "--port", str(port), "--gc", self.target.gc]  # fmt: skip
            env = {**self.env, "NODE_NAME": f"node-{'ab'[i]}",
                   "BENCH_GC_STATS": str(self.stats_paths[i])}  # fmt: skip
            with log.open("wb") as out:
                self.processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                                       stderr=subprocess.STDOUT))  # fmt: skip
        if self.target.app == "demo":  # the demo's backend worker, as `make demo` runs it
            worker = [sys.executable, "manage.py", "runworker", "chat-commands"]
            with (self.workdir / "worker.log").open("wb") as out:
                self.processes.append(subprocess.Popen(worker, cwd=ROOT, stdout=out,
                    stderr=subprocess.STDOUT, env={**self.env, "NODE_NAME": "worker"}))  # fmt: skip
        for i, port in enumerate(self.ports):
            _wait_listening(port, self.processes[i], self.workdir / f"node{i}.log", 60)
            asyncio.run(_warm_up(port))
        self.handles = [psutil.Process(p.pid) for p in self.processes]

    def cpu(self) -> list[float]:
        """User + system CPU seconds of each process so far (nodes first, then the worker)."""
        return [sum(h.cpu_times()[:2]) for h in self.handles]

    def rss(self) -> list[float]:
        """Resident memory of each node in MB."""
        return [h.memory_info().rss / 2**20 for h in self.handles[:2]]

    def gc_stats(self) -> list[dict[str, Any]]:
        """Each node's collections since the previous call (SIGUSR1, then its JSON file)."""
        for path in self.stats_paths:
            path.unlink(missing_ok=True)
        for process in self.processes[:2]:
            process.send_signal(signal.SIGUSR1)
        deadline, stats = time.monotonic() + 30, []
        for path in self.stats_paths:
            while not path.exists():
                if time.monotonic() > deadline:
                    raise BenchError(f"no GC statistics in {path}")
                time.sleep(0.05)  # the node writes it from its signal handler
            stats.append(json.loads(path.read_text()))
        return stats

    def stop(self, keep_logs: Path | None = None) -> None:
        """Stop every process; copy their logs to ``keep_logs`` if given."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.workdir.glob("*.log"):
                shutil.copy(log, keep_logs / log.name)


class Clients:
    """Client processes, each with its pipe; orders go to all, answers come from all."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        for proc in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=client_main, args=(proc, theirs), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)
        self.handles = [psutil.Process(p.pid) for p in self.processes]

    def order(self, op: str, timeout: float, per_client: list[dict[str, Any]] | None = None,
              **fields: Any) -> list[dict[str, Any]]:  # fmt: skip
        """Send ``op`` to every client and return their answers, in client order."""
        for i, pipe in enumerate(self.pipes):
            pipe.send({"op": op, **fields, **(per_client[i] if per_client else {})})
        deadline, replies = time.monotonic() + timeout, []
        for i, pipe in enumerate(self.pipes):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError(f"client {i}: no answer to {op!r} within {timeout:.0f}s")
            reply = pipe.recv()
            if reply["op"] == "error":
                raise BenchError(f"client {i} failed:\n{reply['error']}")
            replies.append(reply)
        return replies

    def stop(self) -> None:
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()


class RedisCpu:
    """Redis's own CPU (``INFO cpu``: user + system seconds of the server)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def seconds(self) -> float:
        return redis_cpu_seconds(self.client)

    def flush(self) -> None:
        self.client.flushall()

    def close(self) -> None:
        self.client.close()
