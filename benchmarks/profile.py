"""Profile one process of one scenario with py-spy (``pip install py-spy``; not a dependency).

    python -m benchmarks.profile fanout --layer broadcast --n 1000 --count 2000 --target node0
    python -m benchmarks.profile concurrent --target sender
    python -m benchmarks.profile p2p --target sender
    python -m benchmarks.profile churn --target node0
    python -m benchmarks.profile burst --target node0

Runs one session like ``python -m benchmarks`` does (full-size plan unless overridden),
samples the chosen worker (node0, node1 or sender) for the whole session, writes the
collapsed stacks to benchmarks/results/profile-<scenario>-<layer>-<target>.txt and
prints the functions with the most samples, by own time and by inclusive time. Idle
time (waiting in epoll) is not sampled, so set-up weighs little next to the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from broadcast_layer.contrib.embedded import EmbeddedRedis

from .harness import RedisStats, WorkerPool
from .membership import churn
from .scenarios import FULL, Bench, burst, fanout, point_to_point, rooms

RESULTS = Path(__file__).parent / "results"


def summarize(collapsed: Path, top: int = 25) -> str:
    """Own and inclusive sample counts per function from py-spy's collapsed (raw) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [
            frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].rstrip(")")
            for frame in stack.split(";")
        ]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scenarios = ("fanout", "concurrent", "burst", "rooms", "p2p", "churn")
    parser.add_argument("scenario", choices=scenarios)
    parser.add_argument("--layer", default="broadcast")
    parser.add_argument("--n", type=int, default=1000, help="fan-out group size")
    parser.add_argument("--count", type=int, default=2000, help="sends in the fan-out burst")
    parser.add_argument("--target", default="node0", choices=WorkerPool.NAMES)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"profile-{args.scenario}-{args.layer}-{args.target}.txt"
    plan = dataclasses.replace(
        FULL,
        reps=1,
        fanout_n=(args.n,),
        fast_count={args.n: args.count},
        paced_seconds=0.5,
        concurrent_n=args.n if args.scenario == "concurrent" else 0,
        concurrent_count=args.count,
    )
    if args.scenario == "concurrent":  # only the concurrent phase matters
        plan = dataclasses.replace(plan, fast_count={args.n: 10})
    run = {
        "fanout": lambda b: fanout(b, args.layer, args.n, 0),
        "concurrent": lambda b: fanout(b, args.layer, args.n, 0),
        "burst": lambda b: burst(b, args.layer, 0),
        "rooms": lambda b: rooms(b, args.layer, 0),
        "p2p": lambda b: point_to_point(b, args.layer, 0),
        "churn": lambda b: churn(b, args.layer, 0),
    }[args.scenario]
    with EmbeddedRedis() as server:
        pool, stats = WorkerPool(), RedisStats(server.url)
        pid = next(e.process.pid for e in pool.endpoints if e.name == args.target)
        command = [
            py_spy,
            "record",
            "--format",
            "raw",
            "--gil",
            "--rate",
            str(args.rate),
            "--pid",
            str(pid),
            "--output",
            str(out),
        ]

        def emit(record: dict[str, object]) -> None:
            keys = ("mode", "deliveries_per_s", "sends_per_s", "ops_per_s", "lost")
            print({k: record[k] for k in keys if k in record})

        bench = Bench(pool, stats, server.url, plan, emit)
        # Samples the whole session; set-up is short next to a long burst, and idle
        # samples (waiting in epoll) are not recorded.
        sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            run(bench)
        finally:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            sampler.wait(30)
            pool.close()
            stats.close()
    print(summarize(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
