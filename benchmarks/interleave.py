"""Run a measurement in fresh processes, several modes in turn, and print their table.

For the one-process cost tools (``metrics_cost``, ``receive_cost``): each mode is a set of
environment variables (``PYTHONPATH`` runs another checkout's package, from that
directory); rounds alternate the modes so that the machine's load hits each alike. The
child runs the tool's file from source, so it can import another checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable

Modes = dict[str, dict[str, str]]
Rows = dict[str, list[dict[str, float]]]


def child_code(path: str, name: str, args: str = "") -> str:
    """Python source that runs ``_child(args)`` of the tool at ``path`` as module ``name``."""
    return (
        f"ns = {{'__name__': {name!r}, '__file__': {path!r}}}; "
        f"exec(open({path!r}).read(), ns); ns['_child']({args})"
    )


def run(modes: Modes, code: str, rounds: int) -> Rows:
    """Each mode's JSON results (one dict per round), the modes alternated ``rounds`` times."""
    rows: Rows = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode, extra in modes.items():
            out = subprocess.run(
                [sys.executable, "-c", code], env={**os.environ, **extra},
                cwd=extra.get("PYTHONPATH"), capture_output=True, text=True, check=True,
            )  # fmt: skip
            rows[mode].append(json.loads(out.stdout))
    return rows


def print_table(
    first: str, unit: str, keys: Iterable[object], rows: Rows,
    pick: Callable[[Iterable[float]], float],
) -> None:  # fmt: skip
    """One row per key, one column per mode: ``pick`` (min, median) of that mode's rounds."""
    print(f"| {first} | " + " | ".join(f"{mode}, {unit}" for mode in rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for key in keys:
        cells = [pick(r[str(key)] for r in runs) for runs in rows.values()]
        print(f"| {key} | " + " | ".join(f"{cell:.2f}" for cell in cells) + " |")
