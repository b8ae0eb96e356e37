"""``python -m benchmarks.sender_cost``: the sender's CPU per ``send()`` to another node.

One process, one private redis-server, no receiver: each layer sends the same message,
one send at a time, to a process-specific channel of a node that is not listening
(broadcast_layer runs its whole ``SEND_TO_NODE`` script; channels_redis pubsub and a
bare redis-py client run one ``PUBLISH``). Prints the process's CPU microseconds per
send, the median of 5 rounds in turn, so the layers share the machine's load alike,
then what Redis spent per ``EVALSHA`` and per ``PUBLISH`` (``INFO commandstats``, the
script's inner commands included in its time). With ``--profile`` it runs
broadcast_layer's rounds under py-spy (``pip install py-spy``) and prints where the
sender's time goes (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from channels_redis.pubsub import RedisPubSubChannelLayer

from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.layer import BroadcastChannelLayer

MESSAGE = {"type": "chat.message", "text": "x" * 40, "n": 1}
#: A process-specific channel of a node id nobody uses: every send reaches nobody.
CHANNEL = "specific.0123456789abcdef!0123456789ab"


async def _cpu_per_send(send: Callable[[], Awaitable[Any]], sends: int) -> float:
    start = time.process_time()
    for _ in range(sends):
        await send()
    return (time.process_time() - start) / sends * 1e6


async def measure(url: str, sends: int, rounds: int, only: str | None) -> dict[str, float]:
    """Median CPU µs per send of each layer (``only``: one of them)."""
    broadcast = BroadcastChannelLayer(hosts=[url], prefix="cost")
    pubsub = RedisPubSubChannelLayer(hosts=[url], prefix="cost")
    raw = aioredis.Redis.from_url(url)
    payload = broadcast.encode(MESSAGE)
    senders: dict[str, Callable[[], Awaitable[Any]]] = {
        "broadcast_layer": lambda: broadcast.send(CHANNEL, MESSAGE),
        "channels_redis pubsub": lambda: pubsub.send(CHANNEL, MESSAGE),
        "redis-py PUBLISH": lambda: raw.publish("cost:nobody", payload),
    }
    if only is not None:
        senders = {only: senders[only]}
    samples: dict[str, list[float]] = {name: [] for name in senders}
    try:
        for send in senders.values():  # warm up: connections, scripts
            await _cpu_per_send(send, 200)
        for _ in range(rounds):
            for name, send in senders.items():
                samples[name].append(await _cpu_per_send(send, sends))
    finally:
        await broadcast.close()
        await pubsub.flush()
        await raw.aclose()
    return {name: statistics.median(values) for name, values in samples.items()}


def _profile(args: argparse.Namespace) -> int:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "sender.txt"
        command = [py_spy, "record", "--format", "raw", "--rate", "1000", "--output", str(out),
                   "--", sys.executable, "-m", "benchmarks.sender_cost", "--only",
                   "broadcast_layer", "--sends", str(args.sends)]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        from .profile import summarize

        print(summarize(out))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sender_cost", description=__doc__)
    parser.add_argument("--sends", type=int, default=20_000, help="sends per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="where broadcast_layer's goes")
    args = parser.parse_args(argv)
    if args.profile:
        return _profile(args)
    with EmbeddedRedis() as server:
        results = asyncio.run(measure(server.url, args.sends, args.rounds, args.only))
        stats = redis.Redis.from_url(server.url)
        try:
            commands = stats.info("commandstats")
        finally:
            stats.close()
    for name, cpu in results.items():
        print(f"{name:24s} {cpu:7.1f} µs of CPU per send")
    for command in ("evalsha", "publish"):
        row = commands.get(f"cmdstat_{command}")
        if row:
            print(f"Redis: {command.upper():8s} {float(row['usec_per_call']):5.1f} µs per call")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
