"""Client-side Redis traffic counters: commands packed and writes (round trips) sent.

Installed in every benchmark process by patching redis-py's connection classes, so
"commands per operation" and "round trips per operation" come from what the
process itself sends, separately from the server-wide INFO deltas (which also count
the commands a Lua script runs and the traffic of every other process).
"""

from __future__ import annotations

import functools
from typing import Any

import redis.asyncio.connection as async_connection
import redis.connection as sync_connection

counts = {"commands": 0, "round_trips": 0}
_installed = False


def snapshot() -> dict[str, int]:
    """The counters now (copy)."""
    return dict(counts)


def delta(before: dict[str, int]) -> dict[str, int]:
    """What was sent since ``before``."""
    return {key: counts[key] - before[key] for key in counts}


def install() -> None:
    """Patch redis-py (sync and asyncio) once to count commands and writes."""
    global _installed
    if _installed:
        return
    _installed = True
    for cls in (async_connection.AbstractConnection, sync_connection.AbstractConnection):
        _wrap_pack(cls)
    _wrap_sync_pack_many(sync_connection.AbstractConnection)  # does not call pack_command
    _wrap_async_send(async_connection.AbstractConnection)
    _wrap_sync_send(sync_connection.AbstractConnection)
    # broadcast_layer's guarded connections write most commands themselves (without
    # redis-py's wait_for task) instead of through send_packed_command: count those too.
    from broadcast_layer._redis import clients

    _wrap_async_send(clients._AsyncGuard, "_write")
    _wrap_layer_pack()


def _wrap_layer_pack() -> None:
    """The layer packs its pipelines with hiredis directly, not through redis-py."""
    from broadcast_layer._redis import host

    original = host._pack
    if original is None:
        return

    def pack(command: Any) -> bytes:
        counts["commands"] += 1
        return original(command)

    host._pack = pack


def _wrap_pack(cls: Any) -> None:
    original = cls.pack_command

    @functools.wraps(original)
    def pack_command(self: Any, *args: Any) -> Any:
        counts["commands"] += 1
        return original(self, *args)

    cls.pack_command = pack_command


def _wrap_sync_pack_many(cls: Any) -> None:
    original = cls.pack_commands

    @functools.wraps(original)
    def pack_commands(self: Any, commands: Any) -> Any:
        commands = list(commands)
        counts["commands"] += len(commands)
        return original(self, commands)

    cls.pack_commands = pack_commands


def _wrap_async_send(cls: Any, name: str = "send_packed_command") -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    async def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["round_trips"] += 1
        return await original(self, *args, **kwargs)

    setattr(cls, name, send_packed_command)


def _wrap_sync_send(cls: Any) -> None:
    original = cls.send_packed_command

    @functools.wraps(original)
    def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["round_trips"] += 1
        return original(self, *args, **kwargs)

    cls.send_packed_command = send_packed_command
