"""What room names and display names may be; shared by the pages and the consumer."""

import re
import secrets

# A room's name is its Channels group name (so `manage.py broadcast room42 ...` reaches
# room42), which only allows ASCII letters, digits, "-", "_" and ".", under 100 characters.
ROOM_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,80}")
MAX_NAME_LENGTH = 40
SESSION_NAME_KEY = "chat_name"


def is_valid_room_name(name: str) -> bool:
    return ROOM_NAME_RE.fullmatch(name) is not None


def group_name(room: str) -> str:
    """The Channels group of a room's members: the room's own name."""
    return room


def clean_display_name(name: object) -> str | None:
    """A display name trimmed to its limit, or None when empty or not a string."""
    if not isinstance(name, str):
        return None
    name = " ".join(name.split())[:MAX_NAME_LENGTH]
    return name or None


def guest_name() -> str:
    return f"guest-{secrets.token_hex(2)}"
