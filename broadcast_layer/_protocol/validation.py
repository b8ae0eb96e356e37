"""The input rules every entry point shares: names, message types, nesting, JSON objects.

The layer, the emitter, the registry, the management commands and the admin forms all
check input here, so a name or a message is valid in one place exactly when it is in
every other. Each bound is a constant below; docs/limits.md lists them all.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..exceptions import InvalidMessage, InvalidMessageType, InvalidName, MessageTooDeep

__all__ = [
    "MAX_CHANNEL_PREFIX_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_NESTING",
    "MAX_TYPE_LENGTH",
    "NAME_CHARACTERS",
    "PROTOCOL_TYPE_NAMESPACES",
    "is_valid_group_name",
    "loads_object",
    "require_shallow",
    "require_valid_channel_name",
    "require_valid_channel_prefix",
    "require_valid_group_name",
    "require_valid_message_type",
]

#: Names are shorter than this many characters (Channels' ``MAX_NAME_LENGTH``).
MAX_NAME_LENGTH = 100
#: ``new_channel(prefix)``: a prefix of at most this many characters leaves room for the
#: node id and random part (30 characters) under MAX_NAME_LENGTH.
MAX_CHANNEL_PREFIX_LENGTH = 64
#: The characters of a group name, and of each side of a channel name's ``!``.
NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
#: A message type is at most this many characters.
MAX_TYPE_LENGTH = 100
#: Containers (dicts, lists, tuples) may nest this deep; the message itself is level 1.
MAX_NESTING = 32
#: Types in these namespaces are ASGI protocol events (``websocket.receive``...): a
#: consumer takes them for its own client's, so operators' tools refuse them by default.
PROTOCOL_TYPE_NAMESPACES = ("websocket", "http", "lifespan")

_CONTAINERS = (dict, list, tuple)

# Channels' own regexes use match() with "$", which also matches before a final "\n",
# and "\d"/"\w", which match non-ASCII digits and letters; these are ASCII and are only
# ever used with fullmatch().
_GROUP = re.compile(r"[A-Za-z0-9\-_.]+")
_CHANNEL = re.compile(r"[A-Za-z0-9\-_.]+(?:![A-Za-z0-9\-_.]*)?")
# A type names a handler: "chat.message" calls chat_message(). Channels refuses
# handler names starting with "_"; empty parts would make "a..b" and "a_b" collide.
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_NAME_RULE = (
    f"name must be a valid unicode string with length < {MAX_NAME_LENGTH} containing only "
    "ASCII alphanumerics, hyphens, underscores, or periods"
)


def _shown(value: object) -> str:
    """``repr`` of an input for an error message, cut short (it may be megabytes long)."""
    if not isinstance(value, (str, int, float, type(None))):
        return f"a {type(value).__name__}"
    text = repr(value[:80] if isinstance(value, str) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _require_name(kind: str, name: object, regex: re.Pattern[str]) -> str:
    if not isinstance(name, str) or len(name) >= MAX_NAME_LENGTH or not regex.fullmatch(name):
        raise InvalidName(f"{kind} {_NAME_RULE}, got {_shown(name)}")
    return name


def require_valid_group_name(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise :class:`InvalidName`."""
    return _require_name("Group", name, _GROUP)


def is_valid_group_name(name: object) -> bool:
    """Whether ``name`` is a valid group name (no exception)."""
    return isinstance(name, str) and len(name) < MAX_NAME_LENGTH and bool(_GROUP.fullmatch(name))


def require_valid_channel_name(name: object, receive: bool = False) -> str:
    """Return ``name`` if it is a valid channel name, else raise :class:`InvalidName`.

    With ``receive``, a process-specific name must end at its ``!`` (Channels' rule).
    """
    valid = _require_name("Channel", name, _CHANNEL)
    if receive and "!" in valid and not valid.endswith("!"):
        raise InvalidName("Specific channel names in receive() must end at the !")
    return valid


def require_valid_channel_prefix(prefix: object) -> str:
    """Return ``prefix`` if ``new_channel(prefix)`` may use it, else raise :class:`InvalidName`.

    Same characters as a group name, at most :data:`MAX_CHANNEL_PREFIX_LENGTH` long.
    """
    valid = _require_name("Channel prefix", prefix, _GROUP)
    if len(valid) > MAX_CHANNEL_PREFIX_LENGTH:
        raise InvalidName(f"Channel prefix is over {MAX_CHANNEL_PREFIX_LENGTH} characters")
    return valid


def require_valid_message_type(value: object, *, allow_protocol: bool = False) -> str:
    """Return ``value`` if it is a type a consumer can handle, else raise.

    A valid type is dot-separated parts of ASCII letters, digits and ``_``, the first
    starting with a letter (``chat.message`` calls ``chat_message``), at most
    :data:`MAX_TYPE_LENGTH` characters. Types in :data:`PROTOCOL_TYPE_NAMESPACES` are
    refused unless ``allow_protocol``. Raises :class:`InvalidMessageType`.
    """
    if not isinstance(value, str):
        raise InvalidMessageType(f"The message type must be a string, got {_shown(value)}")
    if len(value) > MAX_TYPE_LENGTH:
        raise InvalidMessageType(f"The message type is over {MAX_TYPE_LENGTH} characters")
    if not _TYPE.fullmatch(value):
        raise InvalidMessageType(
            f"The message type {_shown(value)} is not a handler name: use dot-separated "
            "parts of ASCII letters, digits and '_', starting with a letter (chat.message)"
        )
    namespace = value.partition(".")[0]
    if namespace in PROTOCOL_TYPE_NAMESPACES and not allow_protocol:
        raise InvalidMessageType(
            f"{value!r} is an ASGI protocol type ({namespace}.*): consumers would take it "
            "for an event from their own client"
        )
    return value


def require_shallow(message: Any, limit: int = MAX_NESTING) -> None:
    """Raise :class:`MessageTooDeep` if dicts, lists or tuples nest deeper than ``limit``.

    Walks containers level by level without recursion, so a self-referencing message
    ends too; about 1 us for a small message (a run on every send).
    """
    level, depth = [message], 1
    while level:
        nested = []
        for container in level:
            if isinstance(container, dict):
                for key, value in container.items():
                    if isinstance(value, _CONTAINERS):
                        nested.append(value)
                    if isinstance(key, tuple):  # the only container that can be a key
                        nested.append(key)
            else:
                for child in container:
                    if isinstance(child, _CONTAINERS):
                        nested.append(child)
        if nested and depth >= limit:
            raise MessageTooDeep(f"The message nests containers more than {limit} deep")
        level, depth = nested, depth + 1


def loads_object(raw: str) -> dict[str, Any]:
    """Parse a JSON object for a message body.

    Raises ``ValueError`` for invalid JSON, :class:`InvalidMessage` for JSON that is not
    an object and :class:`MessageTooDeep` past :data:`MAX_NESTING` (never ``RecursionError``).
    Each message reads after the input's name: ``"--json " + str(exc)``.
    """
    too_deep = f"nests containers more than {MAX_NESTING} deep"
    try:
        value = json.loads(raw)
    except RecursionError:
        raise MessageTooDeep(too_deep) from None
    except ValueError as exc:
        raise ValueError(f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidMessage(f"must be a JSON object, got {type(value).__name__}")
    try:
        require_shallow(value)
    except MessageTooDeep:
        raise MessageTooDeep(too_deep) from None
    return value
