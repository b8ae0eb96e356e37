"""``python -m benchmarks [--quick]``: run every scenario against every layer, report ratios.

Starts a private redis-server on loopback (EmbeddedRedis) and three worker processes
(two nodes and a sender), runs the plan with the layers interleaved inside each
repetition, writes one JSON line per run to benchmarks/results/, and prints the
summary tables and the targets of issue 7.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from broadcast_layer.contrib.embedded import EmbeddedRedis, find_redis_server

from . import membership, scenarios
from .harness import BenchError, RedisStats, WorkerPool
from .layers import LOCAL_LAYERS, REDIS_LAYERS
from .report import Results
from .scenarios import FULL, QUICK, Bench, Plan
from .summary import render

RESULTS = Path(__file__).parent / "results"
SCENARIOS = ("fanout", "burst", "rooms", "p2p", "churn", "registry")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--reps", type=int, help="repetitions (default: 3 full, 1 quick)")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios among {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--n", help="comma-separated fan-out sizes (default 10,100,1000,5000)")
    parser.add_argument("--max-minutes", type=float, help="stop starting runs after this long")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def _plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    if args.reps:
        plan = dataclasses.replace(plan, reps=args.reps)
    if args.n:
        plan = dataclasses.replace(plan, fanout_n=tuple(int(n) for n in args.n.split(",")))
    return plan


def _runs(plan: Plan, only: set[str]) -> list[tuple[str, Callable[[Bench], None]]]:
    """Every session of the plan in order: repetitions outermost, layers rotated per rep."""
    runs: list[tuple[str, Callable[[Bench], None]]] = []
    for rep in range(plan.reps):
        layers = REDIS_LAYERS[rep % 3 :] + REDIS_LAYERS[: rep % 3]
        if "fanout" in only:
            for n in plan.fanout_n:
                # InMemory at N=5000 takes ~35 s per message: once is enough.
                local = LOCAL_LAYERS if n < 5000 or rep == 0 else ("queue",)
                for layer in (*layers, *local):
                    runs.append(
                        (
                            f"fanout {layer} N={n} rep {rep}",
                            lambda b, layer=layer, n=n, rep=rep: scenarios.fanout(b, layer, n, rep),
                        )
                    )
            runs.append((f"fanout raw rep {rep}", lambda b, rep=rep: scenarios.raw_ceiling(b, rep)))
        for name, function in (
            ("burst", scenarios.burst),
            ("rooms", scenarios.rooms),
            ("p2p", scenarios.point_to_point),
            ("churn", membership.churn),
        ):
            if name in only:
                for layer in layers:
                    runs.append(
                        (
                            f"{name} {layer} rep {rep}",
                            lambda b, f=function, layer=layer, rep=rep: f(b, layer, rep),
                        )
                    )
    if "registry" in only:
        runs.append(("registry broadcast", lambda b: membership.registry(b, 0)))
    return runs


def _versions() -> dict[str, str]:
    """What was measured: the layer's commit (``+dirty`` with local changes) and versions."""
    root = Path(__file__).parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "broadcast_layer"):
        commit += "+dirty"
    server = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True)
    return {
        "broadcast_layer": commit,
        "redis_server": server.stdout.split()[2].removeprefix("v="),
        "python": platform.python_version(),
        **{name: metadata.version(name) for name in ("redis", "channels-redis", "channels")},
    }


def _progress(record: dict[str, Any]) -> str:
    keys = ("deliveries_per_s", "sends_per_s", "ops_per_s", "latency_ms", "lost", "error")
    shown = {k: record[k] for k in keys if k in record}
    if "latency_ms" in shown:
        shown["latency_ms"] = {k: round(v, 2) for k, v in shown["latency_ms"].items() if v}
    for key in ("deliveries_per_s", "sends_per_s", "ops_per_s"):
        if shown.get(key) is not None:
            shown[key] = round(shown[key])
    label = " ".join(str(record.get(key, "")) for key in ("scenario", "mode", "layer"))
    label += f" n={record.get('n')}"
    return f"  {label}: {json.dumps(shown)}"


def main(argv: list[str]) -> int:
    args = _parse(argv)
    plan = _plan(args)
    limit = 60 * (args.max_minutes or (6 if args.quick else 14))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{plan.name}-{stamp}.jsonl"
    records: list[dict[str, Any]] = []
    versions = _versions()
    started = time.monotonic()
    with EmbeddedRedis() as server, path.open("w") as out:
        pool, redis_stats = WorkerPool(), RedisStats(server.url)

        def emit(record: dict[str, Any]) -> None:
            record = {"plan": plan.name, "versions": versions, **record}
            records.append(record)
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(_progress(record), flush=True)

        bench = Bench(pool, redis_stats, server.url, plan, emit)
        try:
            for label, run in _runs(plan, set(args.only.split(","))):
                if time.monotonic() - started > limit:
                    print(f"time limit reached; skipping {label} and the rest", flush=True)
                    break
                print(f"[{time.monotonic() - started:6.1f}s] {label}", flush=True)
                try:
                    run(bench)
                except BenchError as exc:
                    traceback.print_exc()
                    name, layer = [*label.split(), "", ""][:2]
                    emit({"scenario": name, "layer": layer, "rep": -1, "error": str(exc)})
        finally:
            pool.close()
            redis_stats.close()
    text, checked = render(Results(records), plan)
    header = (
        f"Plan {plan.name}, {plan.reps} repetition(s), {time.monotonic() - started:.0f}s; "
        f"medians of per-repetition ratios; raw records in benchmarks/results/{path.name}\n"
        f"Measured: {', '.join(f'{k} {v}' for k, v in versions.items())}; "
        f"{os.cpu_count()} CPUs\n\n"
    )
    print("\n" + header + text)
    suffix = "" if plan.name == "full" else f"-{plan.name}"
    (RESULTS / f"summary{suffix}.md").write_text(header + text)
    with (RESULTS / f"summary{suffix}.jsonl").open("w") as summary:
        for target in checked:
            summary.write(json.dumps({**target.as_dict(), "versions": versions}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
