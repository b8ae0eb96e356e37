"""What room names and display names may be; shared by the pages, the consumer and the worker.

Chat rooms live in their own namespace: room ``lobby`` is the Channels group
``chat.lobby``. A client picks a room, never a group, so it can neither join nor post
to the site's internal groups (``broadcast.all``, ``user.<id>``), and the room list
shows ``chat.*`` groups only.
"""

from __future__ import annotations

import re
import secrets
import unicodedata

# Letters, digits, "-" and "_": no ".", so no room name looks like an internal group.
ROOM_NAME_RE = re.compile(r"[A-Za-z0-9_\-]{1,80}")
ROOM_GROUP_PREFIX = "chat."
#: A room's chat lines go to a group of their own, ``chatlog.<room>``, which keeps the
#: last lines (CONFIG["history"]): presence diffs in ``chat.<room>`` are not worth keeping.
LINES_GROUP_PREFIX = "chatlog."
MAX_NAME_LENGTH = 40
SESSION_NAME_KEY = "chat_name"
# Control, format (zero-width, bidi overrides), line and paragraph separators,
# private-use, surrogate and unassigned code points: invisible or unpredictable.
_STRIPPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})


def is_valid_room_name(name: object) -> bool:
    """True for a room name a client may use (ASCII, at most 80 characters)."""
    return isinstance(name, str) and ROOM_NAME_RE.fullmatch(name) is not None


def group_name(room: str) -> str:
    """The Channels group of a room's members, e.g. ``chat.lobby``.

    Raises ValueError for an invalid room name, so no caller can build another group.
    """
    if not is_valid_room_name(room):
        raise ValueError(f"Invalid room name {room!r}")
    return ROOM_GROUP_PREFIX + room


def lines_group(room: str) -> str:
    """The history group of a room's chat lines, e.g. ``chatlog.lobby`` (ValueError if invalid)."""
    group_name(room)
    return LINES_GROUP_PREFIX + room


def room_of_group(group: str) -> str | None:
    """The room whose group this is, or None for any other group (internal ones)."""
    room = group.removeprefix(ROOM_GROUP_PREFIX)
    if room == group or not is_valid_room_name(room):
        return None
    return room


def _visible(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c) not in _STRIPPED_CATEGORIES)


def clean_display_name(name: object) -> str | None:
    """A display name as others will see it, or None when nothing is left.

    NFKC-normalised (full-width and other look-alike forms folded), with control,
    zero-width and other format characters removed, runs of whitespace collapsed to
    one space, and cut to MAX_NAME_LENGTH characters. Two names that look the same
    after this are the same string.
    """
    if not isinstance(name, str):
        return None
    # Whitespace first, so a tab or a line separator between two words leaves a space.
    name = " ".join(unicodedata.normalize("NFKC", name).split())
    # Removing a format character can join characters NFKC combines: normalise again.
    name = unicodedata.normalize("NFKC", _visible(name))
    name = " ".join(name.split())[:MAX_NAME_LENGTH].strip()
    return name or None


def guest_name() -> str:
    """A random name for someone who has not chosen one."""
    return f"guest-{secrets.token_hex(2)}"
