"""Fault injection for tests, in one place: every fault is caused for real.

Each helper does what an outage, a crash or an operator would do to a real
deployment: kill Redis clients, kill a process with SIGKILL, restart a
redis-server without persistence, wipe its data, hold commands unexecuted
(``CLIENT PAUSE``) so a connection can die between sending and running, refuse new
connections, lose a history group's publish, force a Sentinel failover, reshard a
Redis Cluster slot or fail a cluster master over. Fault tests count what was lost,
duplicated or reordered with :func:`tally`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import redis

from broadcast_layer.contrib.embedded import EmbeddedRedis

from .cluster import Node, RedisCluster, slot_of


def kill_clients(url: str, kind: str | None = None) -> int:
    """``CLIENT KILL`` every client of ``kind`` (normal, pubsub; None: both) but our own."""
    client = redis.Redis.from_url(url)
    try:
        kinds = [kind] if kind else ["normal", "pubsub"]
        return sum(client.client_kill_filter(_type=k, skipme=True) for k in kinds)
    finally:
        client.close()


def kill_everywhere(urls: Iterable[str], kind: str | None = None) -> int:
    """:func:`kill_clients` on each server (every master of a cluster), one after another."""
    return sum(kill_clients(url, kind) for url in urls)


def normal_clients(url: str) -> int:
    """How many normal (command) clients are connected, ours excluded."""
    client = redis.Redis.from_url(url)
    try:
        return sum(1 for c in client.client_list(_type="normal") if c["cmd"] != "client|list")
    finally:
        client.close()


@contextlib.contextmanager
def writes_paused(url: str, seconds: float = 30.0) -> Iterator[redis.Redis]:
    """``CLIENT PAUSE ... WRITE`` for the block: Redis holds PUBLISH, EVALSHA and writes
    unexecuted (reads and CLIENT KILL still run), so a test can kill a connection whose
    command was sent but not run. Yields the admin client; unpauses on exit."""
    client = redis.Redis.from_url(url)
    try:
        client.client_pause(int(seconds * 1000), all=False)
        yield client
    finally:
        client.client_unpause()
        client.close()


def named_host(url: str) -> tuple[dict[str, str], str]:
    """A host entry whose connections carry a unique ``CLIENT SETNAME``, so a test can
    count its own layer's clients apart from any other on the same server."""
    name = "test-" + uuid.uuid4().hex[:8]
    return {"address": url, "client_name": name}, name


def blocked_on(url: str, *commands: str, name: str | None = None) -> int:
    """How many clients (only those named ``name``, if given) are blocked in one of
    ``commands``, for example held by a pause."""
    client = redis.Redis.from_url(url)
    try:
        return sum(
            1
            for c in client.client_list()
            if "b" in c["flags"] and c["cmd"] in commands and name in (None, c["name"])
        )
    finally:
        client.close()


def flushall(url: str) -> None:
    """Wipe every key, as an operator's ``FLUSHALL`` would."""
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


def script_flush(url: str) -> None:
    """Drop Redis's script cache (``SCRIPT FLUSH``), as a restart or an operator would."""
    client = redis.Redis.from_url(url)
    try:
        client.script_flush()
    finally:
        client.close()


@contextlib.contextmanager
def partition(url: str) -> Iterator[None]:
    """Cut every client off a running redis-server for the ``with`` block; keep its data.

    Redis moves its listener to another port (``CONFIG SET port``, on a connection that
    stays open) and ``CLIENT KILL``s every other client, so every command and reconnect
    fails with "connection refused" until the block ends and the port is restored. Unlike
    a restart, nothing stored is lost, so what the registry lacks afterwards was missed.
    """
    admin = redis.Redis.from_url(url, single_connection_client=True)
    port = admin.config_get("port")["port"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        elsewhere = probe.getsockname()[1]
    try:
        admin.config_set("port", elsewhere)
        for kind in ("normal", "pubsub"):
            admin.client_kill_filter(_type=kind, skipme=True)
        yield
    finally:
        admin.config_set("port", port)
        admin.close()


@contextlib.contextmanager
def refusing_new_clients(url: str) -> Iterator[redis.Redis]:
    """The server refuses every new connection for the ``with`` block (``CONFIG SET
    maxclients 1``; those already open stay), as a server cut off from new clients.

    Yields the admin connection, which still runs commands there: a client it kills
    cannot come back until the block ends and maxclients is restored.
    """
    admin = redis.Redis.from_url(url, single_connection_client=True)
    limit = admin.config_get("maxclients")["maxclients"]
    try:
        admin.config_set("maxclients", 1)
        yield admin
    finally:
        admin.config_set("maxclients", limit)
        admin.close()


def append_unpublished(
    client: redis.Redis | redis.RedisCluster, stream: str, meta: str, data: bytes
) -> int:
    """Append ``data`` to a history group's stream as ``HISTORY_APPEND`` does, without
    publishing it: a message whose publish a node missed (pub/sub is at most once).
    ``stream`` and ``meta`` are the group's two keys; returns the new offset."""
    offset = int(client.hincrby(meta, "top", 1))
    client.xadd(stream, {"m": data}, id=f"0-{offset}")
    return offset


def restart_without_persistence(server: EmbeddedRedis) -> None:
    """Stop a redis-server and start an empty one on the same port: all data is lost."""
    server.restart()


def sentinel_failover(sentinel_port: int, master_name: str) -> None:
    """``SENTINEL FAILOVER``: an operator forces the sentinels to promote a replica now."""
    client = redis.Redis(port=sentinel_port)
    try:
        client.sentinel_failover(master_name)
    finally:
        client.close()


def reshard(cluster: RedisCluster, channel: str | bytes, to_master: Node | None = None) -> Node:
    """Move the slot of ``channel`` to another master (any other one by default), as
    ``redis-cli --cluster reshard`` would; return the new owner once every node agrees."""
    source = cluster.owner_of(channel)
    target = to_master or next(m for m in cluster.masters() if m is not source)
    cluster.move_slot(slot_of(channel), target)
    return target


def cluster_failover(cluster: RedisCluster, master: Node) -> Node:
    """``CLUSTER FAILOVER`` on a replica of ``master``: return it once it is the master."""
    return cluster.failover(master)


def sigkill(process: subprocess.Popen[bytes] | subprocess.Popen[str] | int) -> None:
    """``SIGKILL`` a process (no clean-up runs) and reap it."""
    pid = process if isinstance(process, int) else process.pid
    os.kill(pid, signal.SIGKILL)
    if not isinstance(process, int):
        process.wait()


@dataclass(frozen=True)
class Tally:
    """What one receiver got of a numbered stream of messages."""

    sent: int
    received: int
    lost: int
    duplicated: int
    reordered: int


def tally(sent: Iterable[int], received: Sequence[int]) -> Tally:
    """Count lost, duplicated and out-of-order numbers in ``received`` against ``sent``."""
    expected = set(sent)
    seen: set[int] = set()
    duplicated = reordered = 0
    highest = None
    for number in received:
        if number in seen:
            duplicated += 1
            continue
        seen.add(number)
        if highest is not None and number < highest:
            reordered += 1
        highest = number if highest is None else max(highest, number)
    return Tally(
        sent=len(expected),
        received=len(received),
        lost=len(expected - seen),
        duplicated=duplicated,
        reordered=reordered,
    )
