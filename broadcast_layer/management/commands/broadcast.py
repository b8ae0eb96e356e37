"""``manage.py broadcast``: send to a group, a user, a channel or everyone, from the shell."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from broadcast_layer.emitter import EmitResult, Emitter, emitter_settings
from broadcast_layer.exceptions import ChannelFull, MessageTooLarge, RedisUnavailable
from broadcast_layer.management.base import OneLineErrorsCommand

#: With --stdin, a running count goes to stderr every this many messages.
PROGRESS_EVERY = 1000


class Command(OneLineErrorsCommand):
    help = (
        'Send a message to connected clients: `broadcast room42 "hello"` sends '
        '{"type": <DEFAULT_TYPE>, "text": "hello"} to group room42.'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "args",
            nargs="*",
            metavar="[GROUP] [TEXT]",
            help="the group (unless --user/--channel/--all) and the text",
        )
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--user", metavar="ID", help="send to every connection of a user")
        target.add_argument("--channel", metavar="NAME", help="send to one channel")
        target.add_argument("--all", action="store_true", help="send to everyone connected")
        parser.add_argument("--type", help="the message type (default: DEFAULT_TYPE setting)")
        parser.add_argument(
            "--json",
            metavar="OBJECT",
            dest="body",
            help="the message body as a JSON object; '-' with --stdin: each line is one",
        )
        parser.add_argument(
            "--stdin", action="store_true", help="send one message per line of standard input"
        )
        parser.add_argument("--layer", default="default", help="the CHANNEL_LAYERS alias")
        output = parser.add_mutually_exclusive_group()
        output.add_argument("--quiet", action="store_true", help="print nothing on success")
        output.add_argument(
            "--output",
            choices=["text", "json"],
            default="text",
            help="one line of text, or one JSON object, per send",
        )

    def handle(self, *args: str, **options: Any) -> None:
        target, text = self._target(list(args), options)
        message_type = options["type"] or emitter_settings()["DEFAULT_TYPE"]
        try:
            emitter = Emitter(options["layer"])
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        try:
            if options["stdin"]:
                self._stream(emitter, target, message_type, options)
            else:
                message = self._message(message_type, text, options["body"])
                self._report(self._send(emitter, target, message), options)
        finally:
            emitter.close()

    def _target(self, args: list[str], options: dict[str, Any]) -> tuple[tuple[str, str], str]:
        if options["user"] is not None:
            target = ("user", options["user"])
        elif options["channel"] is not None:
            target = ("channel", options["channel"])
        elif options["all"]:
            target = ("all", "")
        elif args:
            target = ("group", args.pop(0))
        else:
            raise CommandError("Name a group, or use --user, --channel or --all")
        if len(args) > 1:
            raise CommandError(f"Unexpected arguments: {' '.join(args[1:])}")
        text = args[0] if args else None
        if options["stdin"] and text is not None:
            raise CommandError("Give the text as an argument or with --stdin, not both")
        if not options["stdin"] and text is None and options["body"] is None:
            raise CommandError("Give a text, --json or --stdin")
        return target, text or ""

    def _message(self, message_type: str, text: str | None, body: str | None) -> dict[str, Any]:
        if body is None:
            return {"type": message_type, "text": text}
        try:
            message = json.loads(body)
        except ValueError as exc:
            raise CommandError(f"--json is not valid JSON: {exc}") from None
        if not isinstance(message, dict):
            raise CommandError(f"--json must be a JSON object, got {type(message).__name__}")
        message.setdefault("type", message_type)
        if text:
            message.setdefault("text", text)
        return message

    def _send(self, emitter: Emitter, target: tuple[str, str], message: dict[str, Any]) -> Any:
        kind, name = target
        try:
            if kind == "group":
                return emitter.group(name, message)
            if kind == "user":
                return emitter.user(name, message)
            if kind == "channel":
                return emitter.channel(name, message)
            return emitter.all(message)
        except (TypeError, ValueError, MessageTooLarge, ChannelFull, RedisUnavailable) as exc:
            raise CommandError(_one_line(exc)) from None

    def _report(self, result: EmitResult, options: dict[str, Any]) -> None:
        if options["quiet"]:
            return
        if options["output"] == "json":
            line = json.dumps(
                {"target": result.target, "nodes": result.nodes, "members": result.members}
            )
            self.stdout.write(line)
        else:
            self.stdout.write(str(result))

    def _stream(
        self, emitter: Emitter, target: tuple[str, str], message_type: str, options: dict[str, Any]
    ) -> None:
        lines_are_json = options["body"] == "-"
        if options["body"] is not None and not lines_are_json:
            raise CommandError("With --stdin, --json takes '-' (each line is a JSON object)")
        sent = 0
        for number, line in enumerate(sys.stdin, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            try:
                message = self._message(
                    message_type,
                    line if not lines_are_json else None,
                    line if lines_are_json else None,
                )
            except CommandError as exc:
                raise CommandError(f"line {number}: {exc}") from None
            self._report(self._send(emitter, target, message), options)
            sent += 1
            if sent % PROGRESS_EVERY == 0:
                self.stderr.write(f"\r{sent} sent", ending="")
                self.stderr.flush()
        if sent >= PROGRESS_EVERY:
            self.stderr.write(f"\r{sent} sent")


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text.strip() else type(exc).__name__
