"""What a room name may be; shared by the pages and the consumer."""

import re

# A room's name is its Channels group name (so `manage.py broadcast room42 ...` reaches
# room42), which only allows ASCII letters, digits, "-", "_" and ".", under 100 characters.
ROOM_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,80}")


def is_valid_room_name(name: str) -> bool:
    return ROOM_NAME_RE.fullmatch(name) is not None


def group_name(room: str) -> str:
    """The Channels group of a room's members: the room's own name."""
    return room
