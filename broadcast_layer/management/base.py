"""What the app's management commands share: argument errors in one line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class OneLineErrorsCommand(BaseCommand):
    """A command whose usage errors are one line on stderr (exit status 2), no usage dump."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        error = parser.error

        def one_line_error(message: str) -> None:
            parser.print_usage = lambda file=None: None
            error(f"{message} (see --help)")

        parser.error = one_line_error
        return parser
