"""Medians over repetitions, ratios taken within each repetition, the targets, the tables.

A ratio is computed per repetition (both figures come from the same minute of the
same run) and the median of those ratios is reported, so a neighbour's test suite
slowing the machine down for a while moves both sides of a ratio alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

Record = dict[str, Any]


def _get(record: Record, path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if isinstance(value, list):
            value = value[int(part)]
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
        if value is None:
            return None
    return value


class Results:
    """The records of one run, indexed for lookups."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = [r for r in records if "error" not in r]
        self.errors = [r for r in records if "error" in r]
        self.reps = sorted({r["rep"] for r in self.records})

    def find(self, rep: int, **match: Any) -> Record | None:
        for record in self.records:
            if record["rep"] == rep and all(record.get(k) == v for k, v in match.items()):
                return record
        return None

    def values(self, path: str, **match: Any) -> list[float]:
        found = (self.find(rep, **match) for rep in self.reps)
        return [v for r in found if r is not None and (v := _get(r, path)) is not None]

    def median(self, path: str, **match: Any) -> float | None:
        values = self.values(path, **match)
        return statistics.median(values) if values else None

    def total(self, path: str, **match: Any) -> int | None:
        values = self.values(path, **match)
        return int(sum(values)) if values else None

    def ratio(
        self, path: str, num: dict[str, Any], den: dict[str, Any], den_path: str | None = None
    ) -> float | None:
        """Median over repetitions of num/den, each pair taken in the same repetition."""
        ratios = []
        for rep in self.reps:
            a, b = self.find(rep, **num), self.find(rep, **den)
            x = _get(a, path) if a else None
            y = _get(b, den_path or path) if b else None
            if x is not None and y:
                ratios.append(x / y)
        return statistics.median(ratios) if ratios else None


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if digits == 0 and abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.{max(digits, 2) if abs(value) < 100 else digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


class Target:
    """One target of issue 7 and whether the run met it."""

    def __init__(self, name: str, value: str, met: bool | None) -> None:
        self.name, self.value, self.met = name, value, met

    def row(self) -> list[Any]:
        verdict = "n/a" if self.met is None else ("met" if self.met else "**missed**")
        return [self.name, self.value, verdict]

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.name, "value": self.value, "met": self.met}


def _check(value: float | None, test: Callable[[float], bool]) -> bool | None:
    return None if value is None else test(value)
