"""A local Sentinel deployment for failover tests: a master, a replica and three sentinels.

Every process is a real ``redis-server`` on a loopback port with persistence off. Their
config files live in a temporary directory (Sentinel rewrites its own), and
:meth:`SentinelDeployment.stop` ends every process it started, whatever state the test
left them in. The faults themselves (``SENTINEL FAILOVER``, ``SIGKILL``) are in
``tests/faults.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis import asyncio as aioredis

from broadcast_layer.contrib.embedded import _free_port, find_redis_server

from .servers import answers

MASTER_NAME = "mymaster"
#: Sentinel settings short enough for a test: down after 1 s, a failover retried after 3 s.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


@dataclass
class Server:
    """One redis-server process (data node or sentinel) and its port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class SentinelDeployment:
    """A master, one replica and three sentinels (quorum 2) on loopback ports."""

    directory: Path
    data: dict[int, Server] = field(default_factory=dict)  # by port: master and replica
    sentinels: list[Server] = field(default_factory=list)
    others: list[Server] = field(default_factory=list)  # sentinels that watch nothing

    # -- start and stop ----------------------------------------------------------------

    def start(self) -> SentinelDeployment:
        master = self._start_data("master")
        replica = self._start_data("replica", replicaof=master.port)
        self._wait(lambda: _info(replica, "replication").get("master_link_status") == "up",
                   "the replica to sync")  # fmt: skip
        for n in range(3):
            self.sentinels.append(self._start_sentinel(f"sentinel{n}", master.port))
        # Ready when every sentinel knows the replica and the two other sentinels, so a
        # SIGKILL of the master reaches quorum and a failover has a replica to promote.
        self._wait(self._sentinels_ready, "the sentinels to find each other and the replica")
        return self

    def stop(self) -> None:
        """End every process this deployment started (idempotent)."""
        servers = [*self.others, *self.sentinels, *self.data.values()]
        for server in servers:
            if server.alive:
                server.process.terminate()
        for server in servers:
            try:
                server.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()

    def restart(self, server: Server) -> Server:
        """Start a data node again on its port, from its config file, with no data."""
        if server.alive:
            raise RuntimeError(f"{server.name} is still running")
        restarted = self._spawn(server.name, (self.directory / f"{server.name}.conf").read_text())
        self.data[restarted.port] = restarted
        return restarted

    def start_idle_sentinel(self) -> Server:
        """A sentinel that monitors nothing: it never announces a switch of this master."""
        port = _free_port()
        conf = f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.directory}\n"
        server = self._spawn(f"idle-sentinel{len(self.others)}", conf, "--sentinel")
        self.others.append(server)
        return server

    def _spawn(self, name: str, conf: str, *extra: str) -> Server:
        path = self.directory / f"{name}.conf"
        path.write_text(conf)
        log = self.directory / f"{name}.log"
        port = int(conf.split()[1])
        with log.open("ab") as out:
            process = subprocess.Popen(
                [find_redis_server(), str(path), *extra],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        server = Server(name, port, process, log)
        self._wait(lambda: answers(server, name), f"{name} to start")
        return server

    def _start_data(self, name: str, replicaof: int | None = None) -> Server:
        port = _free_port()
        conf = (
            f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.directory}\n"
            f'dbfilename {name}.rdb\nsave ""\nappendonly no\n'
            "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n"
        )
        if replicaof is not None:
            conf += f"replicaof 127.0.0.1 {replicaof}\n"
        server = self._spawn(name, conf)
        self.data[port] = server
        return server

    def _start_sentinel(self, name: str, master_port: int) -> Server:
        port = _free_port()
        conf = (
            f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.directory}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        return self._spawn(name, conf, "--sentinel")

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                state = client.sentinel_master(MASTER_NAME)
                replicas = client.sentinel_slaves(MASTER_NAME)
            finally:
                client.close()
            if state["num-other-sentinels"] < len(self.sentinels) - 1:
                return False
            if not any(r["master-link-status"] == "ok" and not r["is_sdown"] for r in replicas):
                return False
        return True

    @staticmethod
    def _wait(condition: Any, what: str, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.05)  # set-up only, outside any measured window

    # -- what tests use ----------------------------------------------------------------

    def host(self, **options: Any) -> dict[str, Any]:
        """A ``hosts`` entry for the layer: every sentinel, the master's name."""
        return {
            "sentinels": [s.address for s in self.sentinels],
            "master_name": MASTER_NAME,
            **options,
        }

    def master(self) -> Server:
        """The data node the sentinels currently name as master."""
        client = self.sentinels[0].client()
        try:
            _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        finally:
            client.close()
        return self.data[int(port)]

    def replica(self) -> Server:
        """A data node that is not the current master."""
        master = self.master()
        return next(s for s in self.data.values() if s is not master)


def _info(server: Server, section: str) -> dict[str, Any]:
    client = server.client()
    try:
        return dict(client.info(section))
    finally:
        client.close()


@contextlib.contextmanager
def sentinel_deployment() -> Iterator[SentinelDeployment]:
    """Start a deployment in a temporary directory; always stop it and remove the files."""
    with tempfile.TemporaryDirectory(prefix="broadcast-sentinel-") as directory:
        deployment = SentinelDeployment(Path(directory))
        try:
            yield deployment.start()
        finally:
            deployment.stop()


@pytest.fixture(name="sentinels")
def sentinels_fixture() -> Iterator[SentinelDeployment]:
    """A fresh master, replica and three sentinels for one test."""
    with sentinel_deployment() as deployment:
        yield deployment


class SwitchClock:
    """Records when the sentinels announce ``+switch-master`` (the earliest of the three)."""

    def __init__(self, deployment: SentinelDeployment) -> None:
        self._deployment = deployment
        self.switches: list[tuple[float, tuple[str, int]]] = []
        self._switched = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> SwitchClock:
        ready = [asyncio.Event() for _ in self._deployment.sentinels]
        for sentinel, subscribed in zip(self._deployment.sentinels, ready, strict=True):
            self._tasks.append(asyncio.create_task(self._listen(sentinel, subscribed)))
        async with asyncio.timeout(10):
            await asyncio.gather(*(event.wait() for event in ready))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self, sentinel: Server, subscribed: asyncio.Event) -> None:
        client = aioredis.Redis(port=sentinel.port)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe("+switch-master")
            subscribed.set()
            async for message in _messages(pubsub):
                name, _, _, ip, port = message.decode().split()
                if name == MASTER_NAME:
                    self.switches.append((time.monotonic(), (ip, int(port))))
                    self._switched.set()
        finally:
            await pubsub.aclose()
            await client.aclose()

    async def switched(self, seconds: float = 30.0) -> tuple[float, tuple[str, int]]:
        """The time (``time.monotonic()``) of the first announcement, and the new master."""
        async with asyncio.timeout(seconds):
            await self._switched.wait()
        return min(self.switches)


async def _messages(pubsub: Any) -> AsyncIterator[bytes]:
    async for message in pubsub.listen():
        if message["type"] == "message":
            yield message["data"]
