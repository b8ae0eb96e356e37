"""What the app's management commands share: one-line errors, checked numeric flags and
the one way deprecated flags are announced."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class OneLineErrorsCommand(BaseCommand):
    """A command whose usage errors are one line on stderr (exit status 2), no usage dump."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        error = parser.error

        def one_line_error(message: str) -> None:
            parser.print_usage = lambda file=None: None
            error(f"{one_line(message)} (see --help)")

        parser.error = one_line_error
        return parser

    def warn_deprecated(self, old: str, new: str) -> None:
        """Say on stderr, in one line, that ``old`` still works but ``new`` replaces it."""
        self.stderr.write(f"DeprecationWarning: {old} is deprecated; use {new} instead.")


def one_line(error: BaseException | str) -> str:
    """The first line of an error's text (its class name when it has none)."""
    text = str(error)
    if not text.strip():
        return type(error).__name__ if isinstance(error, BaseException) else "error"
    return text.strip().splitlines()[0]


def number_in(low: float, high: float, *, integer: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` accepting a finite number in [low, high] (an int if ``integer``).

    ``nan``, ``inf``, negatives and out-of-range values become a one-line usage error.
    """
    kind = "an integer" if integer else "a number"

    def parse(text: str) -> float:
        try:
            value: float = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} is needed, got {text[:40]!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be {kind} from {low:g} to {high:g}")
        return value

    parse.__name__ = kind  # argparse names the type in some messages
    return parse
