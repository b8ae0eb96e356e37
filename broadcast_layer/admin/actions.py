"""What the admin does to live rooms: send to a room, remove a member, disconnect a channel.

The admin's only bridge to the async layer (``async_to_sync``) is here. Called from a
view under Daphne, ``async_to_sync`` runs the call on the server's own loop and node;
under WSGI or the test client, on a fresh loop whose node closes with it. Sending uses
the synchronous :class:`~broadcast_layer.emitter.Emitter` and needs no loop at all.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync

from ..emitter import EmitResult, Emitter
from ..layer import get_layer

__all__ = ["disconnect", "remove", "send"]


def send(alias: str, room: str, message: dict[str, Any]) -> EmitResult:
    """Publish ``message`` to the room's group once; raises as :meth:`Emitter.group` does."""
    emitter = Emitter(alias)
    try:
        return emitter.group(room, message)
    finally:
        emitter.close()


def remove(alias: str, room: str, channel: str) -> None:
    """Take ``channel`` out of the room's group, asking its owning node if need be.

    Idempotent (removing a non-member does nothing). Raises ``TypeError`` for invalid
    names and ``RedisUnavailable`` when Redis or the owning node does not answer.
    """
    async_to_sync(get_layer(alias).group_discard)(room, channel)


def disconnect(alias: str, channel: str) -> bool:
    """Ask the channel's node to close its connection; False when that node is not running.

    Raises ``ValueError`` for a normal (not process-specific) channel and
    ``RedisUnavailable`` when Redis or the owning node does not answer.
    """
    return bool(async_to_sync(get_layer(alias).disconnect)(channel))
