"""Who pays for a point-to-point send, and for whose wake-ups: ``python -m benchmarks.p2p_cost``.

The point-to-point scenario without the benchmark's harness: one private redis-server,
two node processes with 50 receiving channels each, and a sender process that sends
one message at a time, round-robin over the 100 channels, as the scenario's sender
does. broadcast_layer and channels_redis pubsub take turns (``--rounds`` each). Per
send, it prints the sender's rate, the CPU of Redis (``INFO cpu``), of the sender and of
the two nodes, and how often the sender and the nodes went to sleep (voluntary context
switches): each sleep is a wake-up that the Redis write reaching that process pays for
in the kernel. With ``--perf`` (Linux ``perf``; not a dependency) it also records
Redis during one more round of each layer and prints the share of Redis's samples in
``sock_def_readable``, the kernel's waking of a socket's reader
(docs/performance.md, "Point-to-point, round three").
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import redis

from broadcast_layer.contrib.embedded import EmbeddedRedis

from .harness import redis_cpu_seconds
from .layers import LABELS, make_layer

CHANNELS_PER_NODE, WARM = 50, 300
LAYERS = ("broadcast", "pubsub")  # kinds of layers.make_layer
PREFIX, CAPACITY = "p2pcost", 100  # the layers' default capacity


def _usage() -> tuple[float, int]:
    """This process's CPU seconds and voluntary context switches so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw


def _node(layer_name: str, url: str, pipe: Connection) -> None:
    async def main() -> None:
        layer = make_layer(layer_name, url, PREFIX, CAPACITY)
        channels = [await layer.new_channel() for _ in range(CHANNELS_PER_NODE)]
        received = 0

        async def drain(channel: str) -> None:
            nonlocal received
            while True:
                await layer.receive(channel)
                received += 1

        tasks = [asyncio.create_task(drain(channel)) for channel in channels]
        assert len(tasks) == len(channels)  # kept: the loop holds tasks weakly
        pipe.send(channels)
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "stop":
                os._exit(0)  # no clean-up: pubsub's receivers would unsubscribe one by one
            pipe.send((received, *_usage()))  # "mark"

    asyncio.run(main())


def _sender(layer_name: str, url: str, channels: list[str], sends: int, pipe: Connection) -> None:
    async def main() -> None:
        layer = make_layer(layer_name, url, PREFIX, CAPACITY)
        for i in range(WARM):
            await layer.send(channels[i % len(channels)], {"type": "warm", "i": i})
        pipe.send("warm")
        pipe.recv()
        cpu0, sleeps0 = _usage()
        started = time.perf_counter()
        for i in range(sends):
            await layer.send(channels[i % len(channels)], {"type": "p2p", "i": i, "pad": "x" * 50})
        wall = time.perf_counter() - started
        cpu, sleeps = _usage()
        pipe.send((wall, cpu - cpu0, sleeps - sleeps0))

    asyncio.run(main())


def _round(
    layer: str, url: str, sends: int, while_sending: Callable[[], _Perf] | None = None
) -> tuple[dict[str, float], _Perf | None]:
    """One round of one layer: per-send figures (µs of CPU, sleeps), and the probe
    ``while_sending`` started before the sends and finished after them."""
    ctx = multiprocessing.get_context("spawn")
    info = redis.Redis.from_url(url)
    pipes: list[Connection] = []
    processes: list[Any] = []
    probe: _Perf | None = None

    def start(target: Callable[..., None], *args: Any) -> Connection:
        ours, theirs = ctx.Pipe()
        process = ctx.Process(target=target, args=(*args, theirs), daemon=True)
        process.start()
        theirs.close()  # ours alone: a child that dies ends recv() with EOFError
        processes.append(process)
        return ours

    try:
        pipes = [start(_node, layer, url) for _ in range(2)]
        channels = [c for pair in zip(*(p.recv() for p in pipes), strict=True) for c in pair]
        sender = start(_sender, layer, url, channels, sends)
        sender.recv()  # warmed up
        time.sleep(0.2)  # the warm-up's deliveries
        for pipe in pipes:
            pipe.send("mark")
        before = [pipe.recv() for pipe in pipes]
        redis0 = redis_cpu_seconds(info)
        probe = while_sending() if while_sending else None
        sender.send("go")
        wall, sender_cpu, sender_sleeps = sender.recv()
        time.sleep(0.2)  # the last deliveries
        redis_cpu = redis_cpu_seconds(info) - redis0
        for pipe in pipes:
            pipe.send("mark")
        after = [pipe.recv() for pipe in pipes]
        for pipe in pipes:
            pipe.send("stop")
    finally:
        if probe is not None:
            probe.finish()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
    received = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    node_cpu = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    node_sleeps = sum(a[2] - b[2] for a, b in zip(after, before, strict=True))
    return {
        "sends/s": sends / wall,
        "lost": sends - received,
        "Redis µs": redis_cpu / sends * 1e6,
        "sender µs": sender_cpu / sends * 1e6,
        "nodes µs": node_cpu / sends * 1e6,
        "sender sleeps": sender_sleeps / sends,
        "nodes sleeps": node_sleeps / sends,
    }, probe


class _Perf:
    """``perf record`` of Redis while a round sends; the share in waking readers."""

    def __init__(self, pid: int, folder: Path) -> None:
        self.path = folder / "perf.data"
        self.process = subprocess.Popen(
            ["perf", "record", "-q", "-g", "-F", "2000", "-o", str(self.path), "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)  # perf attaches
        if self.process.poll() is not None:
            raise RuntimeError(f"perf record exited ({self.process.returncode}): not allowed "
                               "to profile Redis? (kernel.perf_event_paranoid)")  # fmt: skip

    def finish(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(2)  # SIGINT: perf writes its file and exits
            self.process.wait(30)

    def wakeup_share(self) -> float | None:
        """Percent of samples in ``sock_def_readable`` and below (waking the reader);
        None when the report has no such symbol (kernel symbols hidden, or no samples)."""
        report = subprocess.run(
            ["perf", "report", "-i", str(self.path), "--children", "--sort", "sym", "--stdio"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        for line in report.splitlines():
            match = re.match(r"\s*([\d.]+)%\s+[\d.]+%\s+\[k\] sock_def_readable\s*$", line)
            if match:
                return float(match.group(1))
        return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=12_000, help="sends per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each layer")
    parser.add_argument("--perf", action="store_true", help="profile Redis's wake-ups")
    args = parser.parse_args(argv)
    if args.perf and shutil.which("perf") is None:
        print("--perf needs Linux perf (apt-get install linux-perf)", file=sys.stderr)
        return 2
    rows: dict[str, list[dict[str, float]]] = {layer: [] for layer in LAYERS}
    with EmbeddedRedis() as server:
        for _ in range(args.rounds):
            for layer in LAYERS:
                rows[layer].append(_round(layer, server.url, args.sends)[0])
        shares: dict[str, float | None] = {}
        if args.perf:
            pid = int(redis.Redis.from_url(server.url).info("server")["process_id"])
            for layer in LAYERS:
                with tempfile.TemporaryDirectory() as folder:
                    perf = functools.partial(_Perf, pid, Path(folder))
                    _, probe = _round(layer, server.url, args.sends, perf)
                    shares[layer] = probe.wakeup_share()
    keys = list(rows[LAYERS[0]][0])
    print(f"{args.sends} sends a round, medians of {args.rounds} rounds, per send:")
    print(f"{'':22}" + "".join(f"{key:>15}" for key in keys))
    for layer in LAYERS:
        medians = [statistics.median(row[key] for row in rows[layer]) for key in keys]
        print(f"{LABELS[layer]:22}" + "".join(f"{value:15.2f}" for value in medians))
    ratios = [a["sends/s"] / b["sends/s"] for a, b in zip(*rows.values(), strict=True)]
    print(f"broadcast_layer ÷ pubsub: {statistics.median(ratios):.2f} (median of the rounds'"
          f" ratios; per round: {', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
    for layer, share in shares.items():
        found = "not found in the report" if share is None else f"{share:.1f}%"
        print(f"{LABELS[layer]}: Redis's samples waking a socket's reader: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
