"""The harness side: worker processes, the Redis under test, and one session at a time.

A *session* is one layer with its node processes set up (members created, groups
joined) and a sender; it runs one or more *phases* (a burst, a paced run, churn...).
Every wait has a timeout: a worker that does not answer in time is killed and the
pool restarted, so a run always ends by itself.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import uuid
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

import redis

from .worker import worker_main


class BenchError(RuntimeError):
    """A worker failed or did not answer in time."""


class Endpoint:
    """The harness's end of one worker's pipe."""

    def __init__(self, name: str, conn: Connection, process: Any) -> None:
        self.name = name
        self.conn = conn
        self.process = process
        self._pending: deque[dict[str, Any]] = deque()

    def send(self, op: str, **fields: Any) -> None:
        self.conn.send({"op": op, **fields})

    def expect(self, op: str, timeout: float) -> dict[str, Any]:
        """Wait for the next ``op`` message (others are kept for later ``expect`` calls)."""
        for reply in list(self._pending):
            if reply["op"] == op:
                self._pending.remove(reply)
                return reply
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.conn.poll(left):
                raise BenchError(f"{self.name}: no {op!r} within {timeout:.0f}s")
            reply = self.conn.recv()
            if reply["op"] == "error":
                raise BenchError(f"{self.name} failed:\n{reply['error']}")
            if reply["op"] == op:
                return reply
            self._pending.append(reply)

    def poll(self, op: str, timeout: float) -> bool:
        """True if an ``op`` message arrives within ``timeout`` (it is consumed)."""
        try:
            self.expect(op, timeout)
        except BenchError:
            return False
        return True

    def clear(self) -> None:
        self._pending.clear()


class WorkerPool:
    """Three reusable worker processes: node 0, node 1 and the sender."""

    NAMES = ("node0", "node1", "sender")

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self.endpoints: list[Endpoint] = []
        self.start()

    def start(self) -> None:
        for name in self.NAMES:
            parent, child = self._context.Pipe()
            process = self._context.Process(target=worker_main, args=(child,), name=name)
            process.daemon = True
            process.start()
            child.close()
            self.endpoints.append(Endpoint(name, parent, process))

    def close(self) -> None:
        for endpoint in self.endpoints:
            with contextlib.suppress(OSError):
                endpoint.send("exit")
        for endpoint in self.endpoints:
            endpoint.process.join(5)
            if endpoint.process.is_alive():
                endpoint.process.kill()
                endpoint.process.join()
            endpoint.conn.close()
        self.endpoints = []

    def restart(self) -> None:
        for endpoint in self.endpoints:
            endpoint.process.kill()
            endpoint.process.join()
            endpoint.conn.close()
        self.endpoints = []
        self.start()

    @property
    def nodes(self) -> list[Endpoint]:
        return self.endpoints[:2]

    @property
    def sender(self) -> Endpoint:
        return self.endpoints[2]


def redis_cpu_seconds(client: redis.Redis) -> float:
    """CPU seconds the Redis server has used so far (``INFO cpu``: user + system)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class RedisStats:
    """INFO snapshots of the Redis under test, and their differences."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def snapshot(self) -> dict[str, Any]:
        info = self.client.info("all")
        return {
            "commands": info["total_commands_processed"],
            "cmdstat": {k[8:]: v["calls"] for k, v in info.items() if k.startswith("cmdstat_")},
            "net_in": info["total_net_input_bytes"],
            "net_out": info["total_net_output_bytes"],
            "cpu": info["used_cpu_user"] + info["used_cpu_sys"],
            "memory": info["used_memory"],
            "at": time.monotonic(),
        }

    @staticmethod
    def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """What Redis did between two snapshots, minus the INFO commands themselves."""
        stats = {
            name: calls - before["cmdstat"].get(name, 0)
            for name, calls in after["cmdstat"].items()
            if calls != before["cmdstat"].get(name, 0) and name != "info"
        }
        infos = after["cmdstat"].get("info", 0) - before["cmdstat"].get("info", 0)
        return {
            "commands": after["commands"] - before["commands"] - infos,
            "by_command": stats,
            "net_in": after["net_in"] - before["net_in"],
            "net_out": after["net_out"] - before["net_out"],
            "cpu": after["cpu"] - before["cpu"],
            "memory": after["memory"] - before["memory"],
            "wall": after["at"] - before["at"],
        }

    def reset(self) -> None:
        self.client.flushall()

    def close(self) -> None:
        self.client.close()


class Session:
    """One layer set up on its nodes, plus a sender (a context manager)."""

    def __init__(
        self,
        pool: WorkerPool,
        redis_stats: RedisStats,
        url: str,
        layer: str,
        node_jobs: list[dict[str, Any]],
        *,
        capacity: int,
        timeout: float,
    ) -> None:
        self.pool = pool
        self.redis = redis_stats
        self.url = url
        self.layer = layer
        self.prefix = "b" + uuid.uuid4().hex[:8]
        self.capacity = capacity
        self.timeout = timeout
        self.node_jobs = node_jobs
        self.local = len(node_jobs) == 1 and layer in ("inmemory", "queue")
        self.nodes = pool.nodes[: len(node_jobs)]
        self.sender = self.nodes[0] if self.local else pool.sender
        self.setups: list[dict[str, Any]] = []

    def __enter__(self) -> Session:
        common = {
            "layer": self.layer,
            "url": self.url,
            "prefix": self.prefix,
            "capacity": self.capacity,
        }
        for endpoint in self.pool.endpoints:
            endpoint.clear()
        for endpoint, job in zip(self.nodes, self.node_jobs, strict=True):
            endpoint.send("job", role="node", **common, **job)
        self.setups = [node.expect("setup_done", self.timeout) for node in self.nodes]
        if not self.local:
            self.sender.send("job", role="sender", **common)
            self.sender.expect("sender_ready", self.timeout)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.pool.restart()
            self.redis.reset()
            return
        users = self.nodes if self.local else [*self.nodes, self.sender]
        try:
            for endpoint in users:
                endpoint.send("teardown")
            for endpoint in users:
                endpoint.expect("job_done", self.timeout)
        except BenchError:
            self.pool.restart()
        self.redis.reset()

    @property
    def channels(self) -> list[str]:
        return [channel for setup in self.setups for channel in setup["channels"]]

    def ready(self, targets: dict[str, Any], limit: float = 30.0) -> int:
        """Probe until every member of every node has received a probe; return the rounds."""
        for node in self.nodes:
            node.send("probe_arm")
            node.expect("probe_armed", self.timeout)
        waiting = list(self.nodes)
        deadline = time.monotonic() + limit
        rounds = 0
        while waiting:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.layer}: members not reached by probes in {limit:.0f}s")
            rounds += 1
            self.sender.send("probe", **targets)
            self.sender.expect("probe_sent", self.timeout)
            waiting = [node for node in waiting if not node.poll("probed", 0.5)]
        return rounds

    def phase(
        self,
        targets: dict[str, Any],
        run: dict[str, Any],
        *,
        expected: int,
        stride: int,
        deadline: float,
        idle: float = 3.0,
    ) -> dict[str, Any]:
        """Prove readiness, arm the nodes, run the sender, collect everything."""
        probes = self.ready(targets)
        for node in self.nodes:
            node.send("arm", expected=expected, stride=stride, deadline=deadline, idle=idle)
            node.expect("armed", self.timeout)
        before = self.redis.snapshot()
        self.sender.send("run", **targets, **run)
        sent = self.sender.expect("sent", deadline + self.timeout)
        for node in self.nodes:
            node.send("sender_done")
        results = [node.expect("phase_result", deadline + self.timeout) for node in self.nodes]
        redis_delta = RedisStats.delta(before, self.redis.snapshot())
        return {"sent": sent, "nodes": results, "redis": redis_delta, "probe_rounds": probes}
