"""``manage.py broadcast``: send to a group, a user, a channel or everyone, from the shell."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from django.core.management.base import CommandError, CommandParser

from broadcast_layer._protocol.validation import PROTOCOL_TYPE_NAMESPACES as PROTOCOL_TYPES
from broadcast_layer._protocol.validation import (
    loads_object,
    require_valid_channel_name,
    require_valid_group_name,
    require_valid_message_type,
)
from broadcast_layer.emitter import EmitResult, Emitter, all_group, emitter_settings, user_group
from broadcast_layer.exceptions import ChannelFull, MessageTooLarge, RedisUnavailable
from broadcast_layer.management.base import OneLineErrorsCommand, one_line

#: With --stdin, a running count goes to stderr every this many messages.
PROGRESS_EVERY = 1000
#: A --stdin batch (read whole, checked, then sent) holds at most this many lines...
MAX_STDIN_LINES = 100_000
#: ...and this many bytes; --stream has no total, only the per-line bound.
MAX_STDIN_BYTES = 64 * 1024 * 1024

Target = tuple[str, str]


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
        parser.add_argument(
            "--type", help="the message type, a handler name (default: DEFAULT_TYPE setting)"
        )
        parser.add_argument(
            "--allow-protocol-type",
            action="store_true",
            help="allow types in the websocket.*, http.* and lifespan.* namespaces",
        )
        body = parser.add_mutually_exclusive_group()
        body.add_argument(
            "--json-body",
            metavar="OBJECT",
            dest="body",
            help="the message body as a JSON object; '-' with --stdin: each line is one",
        )
        body.add_argument(
            "--json",
            metavar="OBJECT",
            dest="deprecated_body",
            help="deprecated spelling of --json-body",
        )
        parser.add_argument(
            "--stdin",
            action="store_true",
            help=f"send one message per line of standard input: all lines are checked "
            f"before any is sent (at most {MAX_STDIN_LINES} lines, "
            f"{MAX_STDIN_BYTES // 2**20} MiB)",
        )
        parser.add_argument(
            "--stream",
            action="store_true",
            help="with --stdin: send each line as it arrives (tail -f); a bad line stops "
            "it, and the lines before it have been sent",
        )
        parser.add_argument("--layer", default="default", help="the CHANNEL_LAYERS alias")
        output = parser.add_mutually_exclusive_group()
        output.add_argument("--quiet", action="store_true", help="print nothing on success")
        output.add_argument(
            "--format",
            choices=["text", "json"],
            default="text",
            help="one line of text, or one JSON object, per send",
        )
        output.add_argument(
            "--output",
            choices=["text", "json"],
            dest="deprecated_format",
            help="deprecated spelling of --format",
        )

    def handle(self, *args: str, **options: Any) -> None:
        if options["deprecated_body"] is not None:
            self.warn_deprecated("--json OBJECT", "--json-body OBJECT")
            options["body"] = options["deprecated_body"]
        if options["deprecated_format"] is not None:
            self.warn_deprecated(f"--output {options['deprecated_format']}",
                                 f"--format {options['deprecated_format']}")  # fmt: skip
            options["format"] = options["deprecated_format"]
        target, text = self._target(list(args), options)
        self.allow_protocol = bool(options["allow_protocol_type"])
        try:
            message_type = self._check_type(options["type"] or emitter_settings()["DEFAULT_TYPE"])
            emitter = Emitter(options["layer"])
        except (TypeError, ValueError) as exc:
            raise CommandError(one_line(exc)) from None
        try:
            if options["stdin"]:
                lines = _stdin_lines(sys.stdin, emitter.layer.config.max_message_size)
                messages = self._messages(
                    emitter, lines if options["stream"] else _batch(lines), message_type, options
                )
                # A batch is read and checked whole before the first send; a stream is not.
                self._send_all(emitter, target, messages if options["stream"] else [*messages],
                               options)  # fmt: skip
            else:
                message = self._message(message_type, text, options["body"], "--json-body ")
                self._check(emitter, message)
                self._report(self._send(emitter, target, message), options)
        finally:
            emitter.close()

    def _target(self, args: list[str], options: dict[str, Any]) -> tuple[Target, str]:
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
            extra = " ".join(repr(arg) for arg in args[1:])  # repr: one line, whatever they hold
            raise CommandError(f"Unexpected arguments: {extra[:200]}")
        text = args[0] if args else None
        if options["stdin"] and text is not None:
            raise CommandError("Give the text as an argument or with --stdin, not both")
        if options["stream"] and not options["stdin"]:
            raise CommandError("--stream goes with --stdin")
        if not options["stdin"] and text is None and options["body"] is None:
            raise CommandError("Give a text, --json-body or --stdin")
        if options["stdin"] and options["body"] not in (None, "-"):
            raise CommandError("With --stdin, --json-body takes '-' (each line is a JSON object)")
        try:
            _require_target(target)
        except TypeError as exc:
            raise CommandError(one_line(exc)) from None
        return target, text or ""

    def _check_type(self, value: object) -> str:
        try:
            return require_valid_message_type(value, allow_protocol=self.allow_protocol)
        except ValueError as exc:
            protocol = isinstance(value, str) and value.partition(".")[0] in PROTOCOL_TYPES
            hint = "; --allow-protocol-type sends it anyway" if protocol else ""
            raise CommandError(f"{one_line(exc)}{hint}") from None

    def _message(self, message_type: str, text: str | None, body: str | None,
                 source: str) -> dict[str, Any]:  # fmt: skip
        """The message for a text or a JSON body; ``source`` names the input in errors."""
        if body is None:
            return {"type": message_type, "text": text}
        try:
            message = loads_object(body)
        except (TypeError, ValueError) as exc:
            raise CommandError(f"{source}{exc}") from None
        message.setdefault("type", message_type)
        if text:
            message.setdefault("text", text)
        return message

    def _check(self, emitter: Emitter, message: dict[str, Any]) -> None:
        """Raise CommandError unless ``message`` would be sent as it is (type, size, shape)."""
        self._check_type(message["type"])
        try:
            emitter.layer.encode(message)
        except (TypeError, ValueError, MessageTooLarge) as exc:
            raise CommandError(one_line(exc)) from None

    def _messages(
        self,
        emitter: Emitter,
        lines: Iterator[tuple[int, str]],
        message_type: str,
        options: dict[str, Any],
    ) -> Iterator[dict[str, Any]]:
        """Each non-blank line as a checked message; an error names the line."""
        lines_are_json = options["body"] == "-"
        for number, line in lines:
            if not line:
                continue
            json_body = line if lines_are_json else None
            message = self._message(message_type, None if json_body else line, json_body,
                                    f"line {number} ")  # fmt: skip
            try:
                self._check(emitter, message)
            except CommandError as exc:
                raise CommandError(f"line {number}: {exc}") from None
            yield message

    def _send(self, emitter: Emitter, target: Target, message: dict[str, Any]) -> EmitResult:
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
            raise CommandError(one_line(exc)) from None

    def _send_all(self, emitter: Emitter, target: Target, messages: Iterable[dict[str, Any]],
                  options: dict[str, Any]) -> None:  # fmt: skip
        sent = 0
        for message in messages:
            self._report(self._send(emitter, target, message), options)
            sent += 1
            if sent % PROGRESS_EVERY == 0:
                self.stderr.write(f"\r{sent} sent", ending="")
                self.stderr.flush()
        if sent >= PROGRESS_EVERY:
            self.stderr.write(f"\r{sent} sent")

    def _report(self, result: EmitResult, options: dict[str, Any]) -> None:
        if options["quiet"]:
            return
        if options["format"] == "json":
            line = json.dumps(
                {"target": result.target, "nodes": result.nodes, "members": result.members}
            )
            self.stdout.write(line)
        else:
            self.stdout.write(str(result))


def _require_target(target: Target) -> None:
    """Check the target's name before anything is read or sent."""
    kind, name = target
    if kind == "group":
        require_valid_group_name(name)
    elif kind == "user":
        require_valid_group_name(user_group(name))
    elif kind == "channel":
        require_valid_channel_name(name)
    else:
        require_valid_group_name(all_group())


def _stdin_lines(stream: IO[str], max_line: int) -> Iterator[tuple[int, str]]:
    """Numbered lines without their newline; none may exceed ``max_line`` bytes.

    Reads bytes when the stream has them, so undecodable input names its line.
    """
    raw: IO[bytes] | None = getattr(stream, "buffer", None)
    too_long = f"longer than max_message_size ({max_line} bytes)"
    for number in itertools.count(1):
        if raw is None:
            line = stream.readline(max_line + 2)
            if not line:
                return
            line = line.rstrip("\r\n")
            if len(line) > max_line:
                raise CommandError(f"line {number}: {too_long}")
        else:
            data = raw.readline(max_line + 2)
            if not data:
                return
            data = data.rstrip(b"\r\n")
            if len(data) > max_line:
                raise CommandError(f"line {number}: {too_long}")
            try:
                line = data.decode()
            except UnicodeDecodeError:
                raise CommandError(f"line {number}: not UTF-8 text") from None
        yield number, line


def _batch(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """``lines`` while within MAX_STDIN_LINES and MAX_STDIN_BYTES, else a CommandError."""
    size = 0
    for number, line in lines:
        size += len(line) + 1
        if number > MAX_STDIN_LINES or size > MAX_STDIN_BYTES:
            raise CommandError(
                f"standard input is over {MAX_STDIN_LINES} lines or {MAX_STDIN_BYTES} bytes; "
                "split it, or send it with --stream"
            )
        yield number, line
