"""Fan-out against pubsub, per repetition: ``python -m benchmarks.fanout_ratios RUN.jsonl...``.

For each run file written by ``python -m benchmarks`` (``benchmarks/results/*.jsonl``)
and each fan-out size, prints the median and the range of the per-repetition ratios of
broadcast_layer to channels_redis pubsub: deliveries/s, and deliveries per second of a
receiving node's own CPU (which the machine's other work moves less), with
broadcast_layer's deliveries per node CPU-second (docs/performance.md, "Fan-out, round
three").
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

RATE, PER_CPU = "deliveries_per_s", "per_node_deliveries_per_cpu_s"


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x [{min(values):.2f}-{max(values):.2f}]"


def report(path: Path) -> str:
    """The ratios of one run file, one line per fan-out size."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    fast = {
        (r["n"], r["rep"], r["layer"]): r
        for r in records
        if r.get("scenario") == "fanout" and r.get("mode") == "fast" and "error" not in r
    }
    lines = [str(path)]
    for n in sorted({n for n, _, layer in fast if layer == "broadcast"}):
        reps = [rep for m, rep, layer in fast if m == n and layer == "broadcast"]
        pairs = [(fast[(n, r, "broadcast")], fast[(n, r, "pubsub")])
                 for r in reps if (n, r, "pubsub") in fast]  # fmt: skip
        if not pairs:
            continue
        rate = [b[RATE] / p[RATE] for b, p in pairs]
        cpu = [b[PER_CPU] / p[PER_CPU] for b, p in pairs]
        own = statistics.median(b[PER_CPU] for b, _ in pairs)
        lines.append(
            f"  N={n}: deliveries/s x pubsub {_spread(rate)}; per node CPU x pubsub "
            f"{_spread(cpu)}; broadcast_layer {own:,.0f} deliveries per node CPU-s"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    for name in argv:
        print(report(Path(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
