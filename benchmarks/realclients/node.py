"""One server node for the benchmark: Daphne or uvicorn, with a garbage-collection setting.

``python -m benchmarks.realclients.node --server daphne --app demo --port 8001 --gc freeze``

``--gc``: ``default`` (CPython's thresholds), ``freeze`` (``gc.freeze()`` once the
application is imported, so start-up objects are never scanned again), ``threshold``
(``gc.set_threshold(*TUNED)``: fewer young collections, full ones rarer) or ``both``.
The node times every collection (``gc.callbacks``); SIGUSR1 writes what it saw since
the previous SIGUSR1 to ``$BENCH_GC_STATS`` as JSON.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import signal
import time
from typing import Any

APPS = {
    "demo": "demo_chat.asgi:application",
    "plain": "benchmarks.realclients.plain_asgi:application",
}
#: CPython's default is (700, 10, 10).
TUNED = (50_000, 20, 100)


class GcTimes:
    """Counts and durations of collections per generation, between two SIGUSR1s."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._started = 0.0
        self.reset()

    def reset(self) -> None:
        self.counts = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation, took = info["generation"], time.perf_counter() - self._started
        self.counts[generation] += 1
        self.total[generation] += took
        self.longest[generation] = max(self.longest[generation], took)

    def dump(self, signum: int, frame: object) -> None:
        if self.path:
            stats = {"counts": self.counts, "total_s": self.total, "longest_s": self.longest,
                     "frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}  # fmt: skip
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as file:
                json.dump(stats, file)
            os.replace(tmp, self.path)
        self.reset()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    parser.add_argument("--app", choices=tuple(APPS), default="plain")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gc", choices=("default", "freeze", "threshold", "both"),
                        default="default")  # fmt: skip
    args = parser.parse_args()

    times = GcTimes(os.environ.get("BENCH_GC_STATS"))
    gc.callbacks.append(times.callback)
    signal.signal(signal.SIGUSR1, times.dump)
    if args.gc in ("threshold", "both"):
        gc.set_threshold(*TUNED)
    module, _, attribute = APPS[args.app].partition(":")
    getattr(importlib.import_module(module), attribute)  # Django is set up here
    from channels.layers import get_channel_layer

    get_channel_layer()  # imports the layer's modules now rather than at the first client
    if args.gc in ("freeze", "both"):
        gc.collect()
        gc.freeze()
    if args.server == "daphne":
        from daphne.cli import CommandLineInterface

        CommandLineInterface().run(["-b", "127.0.0.1", "-p", str(args.port), APPS[args.app]])
    else:
        import uvicorn

        uvicorn.run(APPS[args.app], host="127.0.0.1", port=args.port, lifespan="off",
                    ws="websockets-sansio", log_level="warning", backlog=2048)  # fmt: skip


if __name__ == "__main__":
    main()
