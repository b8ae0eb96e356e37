"""``manage.py broadcast_health``: probe the layer's pub/sub round trip; exit 0 or 1."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from broadcast_layer.layer import get_layer
from broadcast_layer.management.base import OneLineErrorsCommand, number_in, one_line


class Command(OneLineErrorsCommand):
    help = (
        "Publish a probe on a fresh node's own channel and read it back through Redis "
        "pub/sub. Exit status 0 when it came back within --timeout, else 1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout",
            type=number_in(0.01, 300),
            default=2.0,
            help="seconds to wait for the probe (default 2, from 0.01 to 300)",
        )
        parser.add_argument(
            "--format", choices=["text", "json"], default="text", help="a line, or one JSON object"
        )
        parser.add_argument("--layer", default="default", help="the CHANNEL_LAYERS alias")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            layer = get_layer(options["layer"])
        except ValueError as exc:
            raise CommandError(one_line(exc)) from None
        report = layer.health_sync(options["timeout"])
        if options["format"] == "json":
            self.stdout.write(json.dumps(report.as_dict()))
        elif report.ok:
            latency_ms = (report.latency or 0.0) * 1000
            self.stdout.write(f"ok: node {report.node_id}, pub/sub round trip {latency_ms:.1f} ms")
        if not report.ok:
            raise CommandError(f"unhealthy: {report.error} (pub/sub: {', '.join(report.pubsub)})")
