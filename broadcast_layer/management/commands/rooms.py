"""``manage.py rooms``: list rooms, a room's members, or the live nodes, from the registry."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

from django.core.management.base import CommandError, CommandParser

from broadcast_layer._protocol.globs import compile_glob
from broadcast_layer.exceptions import RedisUnavailable
from broadcast_layer.layer import get_layer
from broadcast_layer.management.base import OneLineErrorsCommand, number_in, one_line
from broadcast_layer.registry import MAX_PAGE, SyncRegistry, get_registry

CLEAR_SCREEN = "\x1b[H\x1b[2J"
#: --watch redraws at most this often (0 would busy-loop on Redis)...
MIN_WATCH_SECONDS = 0.1
#: ...and at least this rarely (a day).
MAX_WATCH_SECONDS = 86_400.0


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _shown(message: dict[str, Any]) -> str:
    """A kept message on one line: its JSON without the history stamp, cut at 100."""
    body = {key: value for key, value in message.items() if key != "history"}
    return json.dumps(body, default=repr)[:100]


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


class Command(OneLineErrorsCommand):
    help = "List rooms with their sizes, the members of one room (`rooms ROOM`), or nodes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("room", nargs="?", help="list this room's members")
        parser.add_argument("--match", metavar="GLOB", help="only rooms matching a glob")
        parser.add_argument("--sort", choices=["name", "size"], default="name")
        parser.add_argument(
            "--limit",
            type=number_in(1, MAX_PAGE, integer=True),
            default=50,
            help=f"at most this many rooms (1 to {MAX_PAGE})",
        )
        parser.add_argument(
            "--history", action="store_true", help="show ROOM's kept messages (history groups)"
        )
        parser.add_argument(
            "--since",
            type=number_in(0, 2**53, integer=True),
            metavar="OFFSET",
            help="with --history: the messages after this offset (default: the latest)",
        )
        parser.add_argument("--nodes", action="store_true", help="list the live nodes")
        output = parser.add_mutually_exclusive_group()
        output.add_argument(
            "--format",
            choices=["text", "json"],
            default="text",
            help="a table, or one JSON object",
        )
        output.add_argument(
            "--json", action="store_true", help="deprecated spelling of --format json"
        )
        parser.add_argument(
            "--watch",
            type=number_in(MIN_WATCH_SECONDS, MAX_WATCH_SECONDS),
            nargs="?",
            const=2.0,
            metavar="SECONDS",
            help=f"refresh in place every SECONDS (default 2, from {MIN_WATCH_SECONDS:g} to "
            f"{MAX_WATCH_SECONDS:g}) until Ctrl-C",
        )
        parser.add_argument("--layer", default="default", help="the CHANNEL_LAYERS alias")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["json"]:
            self.warn_deprecated("--json", "--format json")
            options["format"] = "json"
        if (options["history"] or options["since"] is not None) and not options["room"]:
            raise CommandError("--history and --since need a ROOM")
        if options["since"] is not None and not options["history"]:
            raise CommandError("--since goes with --history")
        if options["match"]:
            try:  # refused before anything goes to Redis
                compile_glob(options["match"])
            except ValueError as exc:
                raise CommandError(f"--match: {one_line(exc)}") from None
        try:
            registry = get_registry(options["layer"])
        except ValueError as exc:
            raise CommandError(one_line(exc)) from None
        if options["watch"] is None:
            self.stdout.write(self._render(registry, options))
            return
        try:
            while True:
                self.stdout.write(CLEAR_SCREEN + self._render(registry, options))
                time.sleep(options["watch"])  # a terminal refresh, not a hot path
        except KeyboardInterrupt:
            pass

    def _render(self, registry: SyncRegistry, options: dict[str, Any]) -> str:
        try:
            if options["nodes"]:
                return self._nodes(registry, options["format"] == "json")
            if options["history"]:
                return self._history(options)
            if options["room"]:
                return self._members(registry, options["room"], options["format"] == "json")
            return self._rooms(registry, options)
        except (TypeError, ValueError) as exc:  # an invalid room name
            raise CommandError(one_line(exc)) from None
        except RedisUnavailable as exc:
            raise CommandError(one_line(exc)) from None

    def _rooms(self, registry: SyncRegistry, options: dict[str, Any]) -> str:
        page = registry.rooms(options["match"], options["sort"], 0, options["limit"])
        rooms = [{"name": r.name, "size": r.size, "nodes": r.nodes} for r in page.rooms]
        if options["format"] == "json":
            return json.dumps({"rooms": rooms, "total": page.total})
        if not rooms:
            return "No rooms."
        shown = f"{len(rooms)} of {page.total} rooms" if page.next_offset else f"{page.total} rooms"
        rows = [[room["name"], room["size"], room["nodes"]] for room in rooms]
        return _table(["ROOM", "MEMBERS", "NODES"], rows) + f"\n{shown}"

    def _history(self, options: dict[str, Any]) -> str:
        room, since = options["room"], options["since"]
        page = get_layer(options["layer"]).sync_group_history(room, since, None, options["limit"])
        messages: list[dict[str, Any]] = [
            {"offset": m.offset, "message": m.message} for m in page.messages
        ]
        if options["format"] == "json":
            return json.dumps({"room": room, "epoch": page.epoch, "top": page.top,
                               "complete": page.complete, "messages": messages},
                              default=repr)  # fmt: skip
        head = f"{room}: epoch {page.epoch}, latest offset {page.top}"
        if not page.complete:
            head += f"; messages after offset {since} are no longer all kept"
        if not messages:
            return f"{head}\nNo messages."
        rows = [[m.offset, _shown(m.message)] for m in page.messages]
        more = f"\n(more: --since {messages[-1]['offset']})" if page.more else ""
        return head + "\n" + _table(["OFFSET", "MESSAGE"], rows) + more

    def _members(self, registry: SyncRegistry, room: str, as_json: bool) -> str:
        members = registry.members(room)
        if as_json:
            return json.dumps(
                {"room": room, "members": [asdict(m) for m in members]}, default=_json_default
            )
        if not members:
            return f"{room}: no members."
        rows = [
            [
                m.channel,
                m.node or "-",
                m.joined.strftime("%Y-%m-%d %H:%M:%S"),
                json.dumps(m.metadata) if m.metadata else "",
            ]
            for m in members
        ]
        return _table(["CHANNEL", "NODE", "JOINED (UTC)", "METADATA"], rows)

    def _nodes(self, registry: SyncRegistry, as_json: bool) -> str:
        nodes = registry.nodes()
        if as_json:
            return json.dumps({"nodes": [asdict(n) for n in nodes]}, default=_json_default)
        if not nodes:
            return "No live nodes."
        now = time.time()
        rows = [
            [
                n.id,
                n.host,
                n.pid,
                n.channels,
                n.started.strftime("%Y-%m-%d %H:%M:%S"),
                f"{now - n.heartbeat.timestamp():.1f}s ago",
            ]
            for n in nodes
        ]
        return _table(["NODE", "HOST", "PID", "CHANNELS", "STARTED (UTC)", "HEARTBEAT"], rows)
