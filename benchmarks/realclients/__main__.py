"""``python -m benchmarks.realclients --clients 500,1000,2000``: real WebSocket clients, two nodes.

For each target and each C: start two server nodes, open C connections from the
client processes over R rooms (at most ``--in-flight`` handshakes at once), send chat
at a steady total rate for ``--duration`` seconds, and record, on the clients' clocks,
handshake times, failed handshakes, closes, latency, lost and duplicated lines; the
RSS and CPU of every process; Redis's CPU. Writes JSON to benchmarks/results/ and a
plot to docs/images/realclients.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import traceback
from array import array
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from broadcast_layer.contrib.embedded import EmbeddedRedis

from ..metrics import percentiles
from .harness import ROOT, BenchError, Clients, Nodes, RedisCpu, Target
from .report import plot, table

RESULTS = ROOT / "benchmarks" / "results"
TARGETS = {
    target.name: target
    for target in (
        Target("demo", "demo", "daphne", "broadcast", gc="both"),  # as demo_chat/launcher.py
        Target("plain", "plain", "daphne", "broadcast"),
        Target("pubsub", "plain", "daphne", "pubsub"),
        Target("uvicorn", "plain", "uvicorn", "broadcast"),
        Target("plain-freeze", "plain", "daphne", "broadcast", gc="freeze", variant=True),
        Target("plain-threshold", "plain", "daphne", "broadcast", gc="threshold", variant=True),
        Target("plain-both", "plain", "daphne", "broadcast", gc="both", variant=True),
        Target("demo-default-gc", "demo", "daphne", "broadcast", variant=True),
    )
}
QUIET, MAX_DRAIN = 3.0, 20.0  # a run ends when no line came for QUIET s, or after MAX_DRAIN s
DEFAULT_TARGETS = "demo,plain,pubsub,uvicorn,plain-freeze,plain-threshold,plain-both"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.realclients", description=__doc__)
    parser.add_argument("--clients", default="500,1000,2000", help="comma-separated C values")
    parser.add_argument("--targets", default=DEFAULT_TARGETS,
                        help=f"comma-separated, among {', '.join(TARGETS)}")  # fmt: skip
    parser.add_argument("--gc-at", help="C values at which GC variants run (default: largest C)")
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20.0, help="chat lines per second, total")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of chat")
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--in-flight", type=int, default=100, help="handshakes in flight, total")
    parser.add_argument("--presence-poll", type=float, default=0.0,
                        help="a presence request every N seconds per client, as the page "
                             "did before presence diffs (0: off, as the page is now)")  # fmt: skip
    parser.add_argument("--plot", default=str(ROOT / "docs" / "images" / "realclients.png"))
    args = parser.parse_args()
    unknown = set(args.targets.split(",")) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    return args


def run_one(target: Target, c: int, args: argparse.Namespace, redis_url: str,
            redis_cpu: RedisCpu) -> dict[str, Any]:  # fmt: skip
    """One target at one C: connect, chat, tally; every process stopped afterwards."""
    redis_cpu.flush()
    with tempfile.TemporaryDirectory(prefix="realclients-") as workdir:
        nodes, clients = Nodes(target, redis_url, Path(workdir)), None
        try:
            nodes.start()
            clients = Clients(args.procs)
            return _measure(target, c, args, nodes, clients, redis_cpu)
        finally:
            if clients is not None:
                try:
                    clients.order("close", timeout=60)
                except BenchError as exc:
                    print(f"  (close: {exc})")
                clients.stop()
            nodes.stop(keep_logs=RESULTS / "realclients-logs" / f"{target.name}-{c}")


def _measure(target: Target, c: int, args: argparse.Namespace, nodes: Nodes, clients: Clients,
             redis_cpu: RedisCpu) -> dict[str, Any]:  # fmt: skip
    procs = args.procs
    peers: list[list[tuple[int, str, int]]] = [[] for _ in range(procs)]
    for i in range(c):
        peers[i % procs].append((i, f"r{i % args.rooms}", nodes.ports[i % 2]))
    poll = args.presence_poll if target.app == "demo" else 0.0
    time.sleep(1.0)  # let the nodes finish starting before the idle RSS is read
    rss_idle, cpu0, redis0, wall0 = nodes.rss(), nodes.cpu(), redis_cpu.seconds(), time.monotonic()
    connected = clients.order(
        "connect", timeout=120 + c / 10,
        per_client=[{"peers": p} for p in peers],
        in_flight=max(1, args.in_flight // procs), presence_poll=poll,
    )  # fmt: skip
    cpu1, redis1, wall1 = nodes.cpu(), redis_cpu.seconds(), time.monotonic()
    time.sleep(2.0)  # the joins' after-effects (the demo's presence lists) settle
    rss_connected, join_gc = nodes.rss(), nodes.gc_stats()
    cpu2, redis2, wall2 = nodes.cpu(), redis_cpu.seconds(), time.monotonic()
    busy = psutil.cpu_times()
    sends = clients.order(
        "send", timeout=args.duration + MAX_DRAIN + 60,
        per_client=[{"offset": p / args.rate} for p in range(procs)],
        start=time.monotonic() + 0.5, duration=args.duration, rate=args.rate / procs,
        quiet=QUIET, max_drain=MAX_DRAIN,
    )  # fmt: skip
    machine = _machine_busy(busy, psutil.cpu_times())
    cpu3, redis3, wall3 = nodes.cpu(), redis_cpu.seconds(), time.monotonic()
    send_gc = nodes.gc_stats()
    lines_by_room: dict[str, list[str]] = defaultdict(list)
    for reply in sends:
        for line, room in reply["sent"]:
            lines_by_room[room].append(line)
    tallies = clients.order("tally", timeout=60, lines_by_room=dict(lines_by_room))

    handshakes = array("d")
    latencies = array("d")
    failures: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    for reply in connected:
        handshakes.frombytes(reply["handshakes"])
        failures.update(reply["failures"])
    for reply in tallies:
        latencies.frombytes(reply["latencies"])
        closes.update({str(code): n for code, n in reply["closes"].items()})
    received = sum(t["received"] for t in tallies)
    send_cpu = [b - a for a, b in zip(cpu2, cpu3, strict=True)]
    open_connections = c - sum(failures.values()) - sum(closes.values())
    return {
        "target": target.name, "app": target.app, "server": target.server,
        "layer": target.layer, "gc": target.gc, "clients": c, "rooms": args.rooms,
        "rate": args.rate, "duration": args.duration, "presence_poll": poll,
        "handshake_ms": percentiles(list(handshakes)),
        "failed_handshakes": sum(failures.values()), "failures": dict(failures),
        "closes": sum(closes.values()), "close_codes": dict(closes),
        "open_connections": open_connections,
        "join_wall_s": wall1 - wall0,
        "lines_sent": sum(len(lines) for lines in lines_by_room.values()),
        "send_failures": sum(r["send_failures"] for r in sends),
        "expected": sum(t["expected"] for t in tallies), "received": received,
        "lost": sum(t["lost"] for t in tallies),
        "duplicated": sum(t["duplicated"] for t in tallies),
        "other_frames": sum(t["others"] for t in tallies),
        "latency_ms": percentiles(list(latencies)),
        "rss_idle_mb": rss_idle, "rss_connected_mb": rss_connected,
        "rss_per_1000_mb": (
            (sum(rss_connected) - sum(rss_idle)) / open_connections * 1000
            if open_connections > 0 else None
        ),
        "cpu_join_s": [b - a for a, b in zip(cpu0, cpu1, strict=True)],
        "cpu_send_s": send_cpu,
        "node_cpu_ms_per_line": sum(send_cpu[:2]) / received * 1000 if received else None,
        "client_cpu_send_s": sum(r["cpu"] for r in sends),
        "redis_cpu_join_s": redis1 - redis0,
        "redis_join_core": (redis1 - redis0) / (wall1 - wall0),
        "redis_cpu_send_s": redis3 - redis2,
        "send_wall_s": wall3 - wall2,
        "gc_join": join_gc, "gc_send": send_gc,
        "loadavg_1min": os.getloadavg()[0], "machine_busy_send": machine,
        "own_cpu_send_s": sum(send_cpu) + sum(r["cpu"] for r in sends) + redis3 - redis2,
    }  # fmt: skip


def _machine_busy(before: Any, after: Any) -> float:
    """The share of every core that was busy (anyone's processes) between two readings."""
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    total = sum(after) - sum(before)
    return 1 - idle / total if total else 0.0


def _versions() -> dict[str, str]:
    from importlib import metadata

    names = ("channels", "channels-redis", "daphne", "uvicorn", "websockets", "redis", "django")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    return {"commit": commit, **{name: metadata.version(name) for name in names}}


def main() -> int:
    args = _parse()
    sizes = [int(n) for n in args.clients.split(",")]
    targets = [TARGETS[name] for name in args.targets.split(",")]
    gc_at = {int(n) for n in args.gc_at.split(",")} if args.gc_at else {max(sizes)}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"realclients-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    with EmbeddedRedis() as server:
        redis_cpu = RedisCpu(server.url)
        try:
            for c in sizes:
                for target in targets:
                    if target.variant and c not in gc_at:
                        continue
                    print(f"{target.name} C={c} ...", flush=True)
                    try:
                        run = run_one(target, c, args, server.url, redis_cpu)
                    except BenchError:
                        traceback.print_exc()
                        run = {"target": target.name, "clients": c, "error": True}
                    runs.append(run)
                    print(table([run], header=False), flush=True)
        finally:
            redis_cpu.close()
    document = {"args": vars(args), "versions": _versions(),
                "minutes": (time.monotonic() - started) / 60, "runs": runs}  # fmt: skip
    out.write_text(json.dumps(document, indent=1))
    print(f"\n{table(runs)}\n\nresults: {out}")
    if len(sizes) > 1:
        plot(runs, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
