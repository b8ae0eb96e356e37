"""A local Redis Cluster for tests: three masters, each with one replica, on loopback.

Every node is a real ``redis-server --cluster-enabled yes`` with persistence off and a
short ``cluster-node-timeout``; ``redis-cli --cluster create`` joins them. The topology
changes tests need are real operations on that cluster: :meth:`RedisCluster.move_slot`
reshards one slot (``CLUSTER SETSLOT`` IMPORTING/MIGRATING, ``MIGRATE``, ``SETSLOT
NODE``) and :meth:`RedisCluster.failover` promotes a replica (``CLUSTER FAILOVER``).
Tests share one cluster per session, so they ask it who owns what instead of assuming
the layout it started with. :meth:`RedisCluster.stop` ends every process it started.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot

from broadcast_layer.contrib.embedded import _free_port, find_redis_server

from .servers import answers

#: How long a node may be unreachable before the others mark it failed: short, so a
#: test's failover settles in seconds.
NODE_TIMEOUT_MS = 1000
MASTERS = 3
#: Redis gives up a manual failover the replica could not complete within 5 s.
MANUAL_FAILOVER_S = 6.0
SLOTS = 16384


class ClusterUnavailable(Exception):
    """This machine cannot run the local cluster (no redis-cli, or a Redis before 7)."""


@dataclass
class Node:
    """One cluster node process, its port and its cluster id."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    node_id: str = ""

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def client(self) -> redis.Redis:
        """A plain client to this node alone (no redirections followed)."""
        return redis.Redis(port=self.port, socket_timeout=5)

    def call(self, *args: str | int | bytes) -> object:
        """Run one command on this node and return the raw reply."""
        client = self.client()
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def info(self, section: str) -> dict[str, object]:
        client = self.client()
        try:
            return dict(client.info(section))
        finally:
            client.close()

    def slot_owners(self) -> dict[int, str]:
        """This node's view of the slot map: slot -> master node id (covered slots only)."""
        owners: dict[int, str] = {}
        for line in _text(self.call("CLUSTER", "NODES")).splitlines():
            fields = line.split()
            if "master" not in fields[2].split(","):
                continue
            for part in fields[8:]:
                if part.startswith("["):  # a migrating/importing marker, not an owned range
                    continue
                start, _, end = part.partition("-")
                for slot in range(int(start), int(end or start) + 1):
                    owners[slot] = fields[0]
        return owners


def redis_tools() -> tuple[str, str]:
    """The redis-server and redis-cli binaries, or :class:`ClusterUnavailable` saying why."""
    server = find_redis_server()
    cli = shutil.which("redis-cli")
    if cli is None:
        raise ClusterUnavailable("redis-cli is not installed (apt-get install redis-tools)")
    version = subprocess.run(
        [server, "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"v=(\d+)\.", version)
    if match is None or int(match.group(1)) < 7:
        raise ClusterUnavailable(f"sharded pub/sub needs redis-server 7 or later: {version}")
    return server, cli


@dataclass
class RedisCluster:
    """Three masters and three replicas on loopback ports, started in ``directory``."""

    directory: Path
    nodes: list[Node] = field(default_factory=list)

    # -- start and stop ----------------------------------------------------------------

    def start(self) -> RedisCluster:
        server, cli = redis_tools()
        for _ in range(MASTERS * 2):
            self.nodes.append(self._spawn(server))
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        for node in self.nodes:
            node.node_id = _text(node.call("CLUSTER", "MYID"))
        self.wait_settled()
        return self

    def _spawn(self, server: str) -> Node:
        port = _free_port()
        conf = self.directory / f"{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.directory}\n"
            f'save ""\nappendonly no\ndbfilename dump-{port}.rdb\n'
            # An explicit bus port: the default (port + 10000) may be taken, or above 65535.
            f"cluster-enabled yes\ncluster-port {_free_port()}\n"
            f"cluster-config-file nodes-{port}.conf\n"
            f"cluster-node-timeout {NODE_TIMEOUT_MS}\n"
            "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n"
        )
        log = self.directory / f"{port}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [server, str(conf)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        node = Node(port, process, log)
        _wait(lambda: answers(node, f"cluster node {port}"), f"node {port} to start")
        return node

    def stop(self) -> None:
        """End every process this cluster started (idempotent)."""
        for node in self.nodes:
            if node.alive:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()

    # -- what tests use ----------------------------------------------------------------

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [node.address for node in self.nodes]

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one node, enough for a cluster client to find the rest."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def by_id(self, node_id: str) -> Node:
        return next(node for node in self.nodes if node.node_id == node_id)

    def masters(self) -> list[Node]:
        """The nodes that own slots now (the first node's view, once settled)."""
        owners = set(self.nodes[0].slot_owners().values())
        return [node for node in self.nodes if node.node_id in owners]

    def replica_of(self, master: Node) -> Node:
        """A replica that follows ``master`` now."""
        for node in self.nodes:
            info = node.info("replication")
            if info.get("role") == "slave" and info.get("master_port") == master.port:
                return node
        raise LookupError(f"no replica follows {master.port}")

    def owner_of(self, key_or_channel: str | bytes) -> Node:
        """The master that owns the slot of a key or a sharded channel."""
        return self.slot_owner(slot_of(key_or_channel))

    def slot_owner(self, slot: int) -> Node:
        return self.by_id(self.nodes[0].slot_owners()[slot])

    def move_slot(self, slot: int, to_master: Node) -> None:
        """Reshard ``slot`` (and its keys) to ``to_master``, as ``redis-cli --cluster
        reshard`` does, then wait until every node agrees on the new owner."""
        source = self.slot_owner(slot)
        if source is to_master:
            return
        to_master.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", to_master.node_id)
        while keys := source.call("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source.call(
                "MIGRATE",
                "127.0.0.1",
                to_master.port,
                "",
                0,
                5000,
                "KEYS",
                *keys,  # type: ignore[misc]
            )
        # The new owner first, then the old one (which drops the slot's sharded
        # subscriptions now), then the rest; the cluster bus would spread it anyway.
        others = [m for m in self.masters() if m not in (to_master, source)]
        for node in [to_master, source, *others]:
            node.call("CLUSTER", "SETSLOT", slot, "NODE", to_master.node_id)
        self.wait_settled(lambda: self._agree(slot, to_master.node_id) and self._same_epoch())

    def failover(self, master: Node) -> Node:
        """``CLUSTER FAILOVER`` on a replica of ``master``; return it once every node agrees
        it is the master of those slots (and the old master follows it)."""
        replica = self.replica_of(master)
        owners = self.nodes[0].slot_owners()
        slot = next(s for s, owner in owners.items() if owner == master.node_id)
        # A manual failover waits for the replica to catch up with its master, and gives up
        # silently after 5 s (a replica demoted by an earlier failover may still be syncing):
        # start it on a replica whose link is up, and ask again if it was given up.
        # Every node must also know the latest epoch (a reshard bumps it without
        # consensus): an election at a stale epoch loses to the master's own and the
        # replica turns back into a replica 60 ms after winning.
        _wait(lambda: _linked(replica), "the replica's link to its master")
        _wait(self._same_epoch, "every node to know the current epoch")
        for _ in range(3):
            replica.call("CLUSTER", "FAILOVER")
            with contextlib.suppress(TimeoutError):
                _wait(lambda: self._agree(slot, replica.node_id), "the replica to be promoted",
                      seconds=MANUAL_FAILOVER_S)  # fmt: skip
                break
        try:
            self.wait_settled(lambda: self._agree(slot, replica.node_id))
        except TimeoutError as exc:
            exc.add_note(f"replica log:\n{replica.log.read_text()[-2500:]}")
            exc.add_note(f"master log:\n{master.log.read_text()[-1500:]}")
            raise
        # Settled for the next fault too: the old master follows the new one, in sync.
        _wait(lambda: _linked(master, to=replica), "the old master to follow the new one")
        return replica

    def wait_settled(self, condition: Callable[[], bool] | None = None) -> None:
        """Wait for ``cluster_state:ok`` on every live node (and ``condition``)."""

        def settled() -> bool:
            for node in self.nodes:
                if node.alive and "cluster_state:ok" not in _text(node.call("CLUSTER", "INFO")):
                    return False
            return condition is None or condition()

        _wait(settled, "the cluster to settle")

    def _same_epoch(self) -> bool:
        epochs = {
            _text(node.call("CLUSTER", "INFO")).split("cluster_current_epoch:")[1].split()[0]
            for node in self.nodes
            if node.alive
        }
        return len(epochs) == 1

    def _agree(self, slot: int, owner_id: str) -> bool:
        return all(node.slot_owners().get(slot) == owner_id for node in self.nodes if node.alive)


def slot_of(key_or_channel: str | bytes) -> int:
    """The hash slot of a key or sharded channel (hash tags honoured)."""
    raw = key_or_channel.encode() if isinstance(key_or_channel, str) else key_or_channel
    return key_slot(raw)


def channels_on_every_master(cluster: RedisCluster, prefix: str, per_master: int = 2) -> list[str]:
    """Channel names spread so that each current master owns ``per_master`` of them."""
    owners = cluster.nodes[0].slot_owners()
    wanted = {node.node_id: per_master for node in cluster.masters()}
    channels: list[str] = []
    n = 0
    while any(wanted.values()):
        channel = f"{prefix}.{n}"
        n += 1
        owner = owners[slot_of(channel)]
        if wanted.get(owner, 0) > 0:
            wanted[owner] -= 1
            channels.append(channel)
    return channels


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _linked(node: Node, to: Node | None = None) -> bool:
    """Whether ``node`` is a replica (of ``to``) with its replication link up."""
    info = node.info("replication")
    if to is not None and info.get("master_port") != to.port:
        return False
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


def _wait(condition: Callable[[], object], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)  # set-up and topology changes only, outside any measured window


@contextlib.contextmanager
def redis_cluster() -> Iterator[RedisCluster]:
    """Start a cluster in a temporary directory; always stop it and remove the files."""
    with tempfile.TemporaryDirectory(prefix="broadcast-cluster-") as directory:
        cluster = RedisCluster(Path(directory))
        try:
            yield cluster.start()
        finally:
            cluster.stop()
