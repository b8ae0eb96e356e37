"""History groups on the wire: the append and read calls, the published frame, the pages.

A history group's messages are kept in a stream whose entry ids are ``0-<offset>``, next
to a meta hash holding the group's ``epoch`` and latest offset (``scripts.HISTORY_APPEND``,
``scripts.HISTORY_READ``). Nothing here does I/O. See docs/history.md.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidHistoryQuery
from . import scripts
from .keys import Keys
from .scripts import Call

#: The key under which every message delivered from a history group carries
#: ``{"offset": int, "epoch": str}``; a message sent to a history group may not hold it.
HISTORY_KEY = "history"
#: ``group_history(limit=...)`` is 1 to this many messages.
MAX_HISTORY_LIMIT = 1000
#: ``CONFIG["history"]`` sizes are 1 to this many messages per group.
MAX_HISTORY_SIZE = 100_000
#: ``CONFIG["history"]`` ttls are at most this many seconds (30 days).
MAX_HISTORY_TTL = 30 * 86400
#: A history group's publish starts with this byte, which no serialized message starts
#: with (msgpack and JSON dicts, Fernet tokens): ``~<offset> <epoch>\n<payload>``.
FRAME_MARK = b"~"


@dataclass(frozen=True)
class HistoryPolicy:
    """What ``CONFIG["history"]`` keeps for the groups one glob matches."""

    size: int
    ttl: float

    @property
    def ttl_ms(self) -> int:
        """The ttl as Redis's PEXPIRE takes it."""
        return max(1, int(self.ttl * 1000))


@dataclass(frozen=True)
class HistoryMessage:
    """One kept message of a history group, with its offset (stamped as delivered)."""

    offset: int
    message: dict[str, Any]


@dataclass(frozen=True)
class HistoryPage:
    """A page of a group's history, oldest first.

    ``complete`` is False when the messages after ``since`` are no longer all kept, or
    the caller's ``epoch`` is not the group's (its history was lost): the caller cannot
    recover and must resynchronise. ``top`` is the group's latest offset; when the last
    message's offset is below it, ask for the next page (``since=messages[-1].offset``).
    """

    epoch: str
    complete: bool
    messages: tuple[HistoryMessage, ...]
    top: int

    @property
    def more(self) -> bool:
        """True when later messages exist than the last one of this page."""
        last = self.messages[-1].offset if self.messages else None
        return last is not None and last < self.top


@dataclass(frozen=True)
class Appended:
    """What a history group's send did: the offset and epoch it got, nodes reached."""

    offset: int
    epoch: str
    reached: int


@dataclass(frozen=True)
class RawPage:
    """A read's reply before decoding: ``entries`` are (offset, serialized message)."""

    epoch: str
    top: int
    first: int
    latest: bool
    entries: tuple[tuple[int, bytes], ...]


def new_epoch() -> str:
    """A random epoch for a group that has none (16 hex digits)."""
    return secrets.token_hex(8)


def open_frame(data: bytes) -> tuple[int, str, bytes] | None:
    """``(offset, epoch, payload)`` of a history group's publish, None for a plain one."""
    if not data.startswith(FRAME_MARK):
        return None
    header, _, payload = data.partition(b"\n")
    offset, _, epoch = header[1:].partition(b" ")
    return int(offset), epoch.decode(), payload


def stamp(message: dict[str, Any], offset: int, epoch: str) -> dict[str, Any]:
    """The message as delivered: with ``message[HISTORY_KEY] = {"offset", "epoch"}``."""
    message[HISTORY_KEY] = {"offset": offset, "epoch": epoch}
    return message


def check_query(since: int | None, limit: int) -> None:
    """Raise :class:`InvalidHistoryQuery` for a ``since`` or ``limit`` out of bounds."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_HISTORY_LIMIT:
        raise InvalidHistoryQuery(f"limit must be an int, 1 to {MAX_HISTORY_LIMIT}: {limit!r}")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
        raise InvalidHistoryQuery(f"since must be None or an offset >= 0, got {since!r}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(raw: Sequence[Any], latest: bool) -> tuple[tuple[int, bytes], ...]:
    entries = [(int(_text(entry_id)[2:]), bytes(fields[1])) for entry_id, fields in raw]
    return tuple(reversed(entries) if latest else entries)


class HistoryCalls:
    """The append and read calls of history groups under one prefix."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def append(self, group: str, policy: HistoryPolicy, data: bytes) -> Call[Appended]:
        """Append a serialized message and publish it with its offset (one script)."""
        keys = self.keys
        return Call(
            scripts.HISTORY_APPEND,
            [keys.history(group), keys.history_meta(group), keys.group_channel(group)],
            [policy.size, policy.ttl_ms, scripts.publish_command(keys.cluster), data, new_epoch()],
            lambda reply: Appended(int(reply[0]), _text(reply[1]), int(reply[2])),
        )

    def read(
        self, group: str, policy: HistoryPolicy, since: int | None, epoch: str | None, limit: int
    ) -> Call[RawPage]:
        """Read up to ``limit`` messages after ``since`` (None: the latest ``limit``)."""
        keys = self.keys
        return Call(
            scripts.HISTORY_READ,
            [keys.history(group), keys.history_meta(group)],
            [-1 if since is None else since, limit, new_epoch(), policy.ttl_ms, epoch or ""],
            lambda reply: RawPage(_text(reply[0]), int(reply[1]), int(reply[2]),
                                  bool(int(reply[3])), _entries(reply[4], bool(int(reply[3])))),
        )  # fmt: skip


def build_page(
    raw: RawPage,
    since: int | None,
    epoch: str | None,
    decode: Callable[[bytes], dict[str, Any]],
) -> HistoryPage:
    """Decode a read into a page, and say whether it recovers everything after ``since``.

    Complete means: the caller's epoch (if given) is the group's, and every offset after
    ``since`` up to the group's top is still kept (the first kept one is at most
    ``since + 1``, and ``since`` is not beyond the top).
    """
    same_epoch = epoch is None or epoch == raw.epoch
    kept = since is None or (raw.first <= since + 1 and since <= raw.top)
    messages = tuple(
        HistoryMessage(offset, stamp(decode(payload), offset, raw.epoch))
        for offset, payload in raw.entries
    )
    return HistoryPage(raw.epoch, same_epoch and kept, messages, raw.top)
