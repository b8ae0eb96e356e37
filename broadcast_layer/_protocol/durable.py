"""Durable worker channels on the wire: a stream per channel read by one consumer group.

``send`` appends (``scripts.DURABLE_SEND``); ``receive`` acknowledges the process's
previous message and takes a message left unacknowledged too long by a dead consumer, or
a new one (``scripts.DURABLE_NEXT``), else blocks in ``XREADGROUP``. Nothing here does
I/O. See docs/history.md ("Durable worker channels").
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from . import scripts
from .keys import Keys
from .scripts import Call

#: The consumer group every durable channel's stream is read by.
CONSUMER_GROUP = "workers"
#: ``CONFIG["durable_channels"]`` claim_after is at most this many seconds (1 day).
MAX_CLAIM_AFTER = 86400
#: A consumer with nothing pending is deleted after this many claim_after periods idle.
IDLE_CONSUMER_PERIODS = 10


def consumer_name() -> str:
    """This process's consumer name: host and pid (a restarted worker gets a new one)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class DurablePolicy:
    """What ``CONFIG["durable_channels"]`` sets for the channels one glob matches."""

    claim_after: float

    @property
    def claim_after_ms(self) -> int:
        """claim_after as XAUTOCLAIM's min-idle-time."""
        return max(1, int(self.claim_after * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(reply: Any) -> tuple[str, bytes] | None:
    if not reply:
        return None
    return _text(reply[0]), bytes(reply[1])


class DurableCalls:
    """The calls of durable channels under one prefix."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def send(self, channel: str, capacity: int, data: bytes) -> Call[bool]:
        """Queue a serialized message; False when the channel is at capacity."""
        return Call(
            scripts.DURABLE_SEND,
            [self.keys.durable(channel)],
            [capacity, data, CONSUMER_GROUP],
            lambda reply: bool(int(reply)),
        )

    def next(
        self, channel: str, policy: DurablePolicy, consumer: str, acks: list[str]
    ) -> Call[tuple[str, bytes] | None]:
        """Acknowledge ``acks``, then take a claimable or new message: (id, payload) or None."""
        idle = policy.claim_after_ms * IDLE_CONSUMER_PERIODS
        return Call(
            scripts.DURABLE_NEXT,
            [self.keys.durable(channel)],
            [CONSUMER_GROUP, consumer, policy.claim_after_ms, idle, *acks],
            _entry,
        )

    def ack(self, channel: str, ids: list[str]) -> Call[int]:
        """Acknowledge (and delete) messages this process received."""
        return Call(scripts.DURABLE_ACK, [self.keys.durable(channel)], [CONSUMER_GROUP, *ids], int)
