"""``python -m benchmarks.lua_cost``: Redis instructions per registry join and leave.

Runs a private ``redis-server`` under valgrind's callgrind (``apt-get install
valgrind``; not a dependency), writes the churn scenario's memberships (two nodes of
200 channels, each in 10 of 100 groups) as the node's registry writer sends them:
pipelines of 14 joins merged into ``REGISTRY_BATCH`` calls, then leaves them. Prints the
instructions Redis ran per join and per leave, counted only while each phase runs.
Unlike CPU time on a shared machine, the count does not move with the load, so it
compares two versions of the scripts (run it in each checkout); ``--keep`` leaves the
callgrind files for ``callgrind_annotate``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from broadcast_layer._protocol import batch
from broadcast_layer._protocol.keys import Keys
from broadcast_layer._protocol.records import RecordCalls
from broadcast_layer._protocol.scripts import Call

NODES = ("n1", "n2")
CHANNELS = 200
GROUPS, EACH = 100, 10
PIPELINE = 14  # operations per pipeline: about what the churn scenario's nodes send


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _instructions(path: Path) -> int:
    """A dump's instruction count (its ``totals:``; its ``summary:`` may say 0)."""
    counts = [int(line.split()[1]) for line in path.read_text().splitlines()
              if line.startswith(("summary:", "totals:"))]  # fmt: skip
    if not counts:
        raise RuntimeError(f"no totals in {path}")
    return max(counts)


class Server:
    """redis-server under callgrind, instrumenting nothing until told to."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={directory}/callgrind.out",
             "redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._shas: dict[str, str] = {}

    def run(self, operations: Sequence[Sequence[Call[Any]]]) -> None:
        """Send the calls as the writer's pipelines would be (``batch.merge``)."""
        for start in range(0, len(operations), PIPELINE):
            calls = [call for operation in operations[start : start + PIPELINE]
                     for call in operation]  # fmt: skip
            pipe = self.client.pipeline(transaction=False)
            for call, _ in batch.merge(calls, None):
                sha = self._shas.get(call.script)
                if sha is None:
                    sha = self._shas[call.script] = hashlib.sha1(call.script.encode()).hexdigest()
                    self.client.script_load(call.script)
                pipe.evalsha(sha, len(call.keys), *call.keys, *call.args)
            pipe.execute(raise_on_error=False)

    def counted(self, name: str, operations: Sequence[Sequence[Call[Any]]]) -> float:
        """Instructions Redis ran for ``operations`` (each its calls), per operation."""
        _control(self.process.pid, "--zero")
        _control(self.process.pid, "-i", "on")
        self.run(operations)
        _control(self.process.pid, "-i", "off")
        before = set(self.directory.glob("callgrind.out*"))
        _control(self.process.pid, f"--dump={name}")
        deadline = time.monotonic() + 30
        while not (new := set(self.directory.glob("callgrind.out*")) - before):
            if time.monotonic() > deadline:
                raise RuntimeError("callgrind wrote no dump")
            time.sleep(0.2)
        time.sleep(0.5)  # the dump is written in one go, but give it a moment
        # The first dump also writes the part before it (callgrind.out, nothing counted):
        # this phase is the numbered file.
        dump = max(new, key=lambda path: int(path.suffix[1:]) if path.suffix[1:].isdigit() else -1)
        return _instructions(dump) / len(operations)

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(30)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the callgrind files")
    options = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("lua_cost needs valgrind (callgrind)", file=sys.stderr)
        return 1
    directory = Path(tempfile.mkdtemp(prefix="lua-cost-"))
    calls = RecordCalls(Keys("bench"), node_ttl=15.0)
    channels = {node: [f"specific.{node}!c{j}" for j in range(CHANNELS)] for node in NODES}
    groups_of = [[f"c{(j * EACH + k) % GROUPS}" for k in range(EACH)] for j in range(CHANNELS)]
    pairs = [(groups_of[j][k], channels[node][j], node)
             for k in range(EACH) for node in NODES for j in range(CHANNELS)]  # fmt: skip

    def writes(make: Callable[[str, str, str], list[Call[int]]]) -> list[list[Call[int]]]:
        return [make(*pair) for pair in pairs]

    server = Server(directory)
    try:
        server.run([[calls.open(channel, node)] for node in NODES for channel in channels[node]])
        server.run(writes(calls.join))  # loads the scripts, sizes the structures
        server.run(writes(calls.leave))
        join = server.counted("join", writes(calls.join))
        leave = server.counted("leave", writes(calls.leave))
    finally:
        server.stop()
    print(f"Redis instructions per join: {join:,.0f}, per leave: {leave:,.0f}")
    if options.keep:
        print(f"callgrind files: {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
