"""Several registry writes sent as one script call (``scripts.REGISTRY_BATCH``).

A node's joins and leaves are two small writes each; sent one ``EVALSHA`` apiece, the
cost of each command (packing it, Redis dispatching it and starting the script, parsing
its reply) outweighs the work. :func:`merge` turns the writes of one pipeline into as
few calls as the slot rule allows, and :func:`split` gives each write its own result.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from . import scripts
from .scripts import Call

#: Most writes one batch call runs (Redis runs no other client's command meanwhile).
LIMIT = 100

#: A call sent in a pipeline and the indexes of the submitted calls it stands for.
Sent = tuple[Call[Any], list[int]]


def merge(
    calls: Sequence[Call[Any]],
    slot: Callable[[Call[Any]], Hashable] | None,
    limit: int = LIMIT,
) -> list[Sent]:
    """The calls to send instead of ``calls``: batchable writes of one ``slot`` merged.

    A merged call takes the place of its first write. Writes of one slot still run in
    the order submitted: a call that is not batchable closes its slot's batch, so the
    writes after it go into a later call. Calls of different slots touch different keys
    (on one server, ``slot`` is None: every call shares the one), so their order does not
    matter. A batch holds at most ``limit`` writes.
    """
    groups: list[tuple[list[Call[Any]], list[int]]] = []
    open_batch: dict[Hashable, int] = {}  # slot -> index in groups of its open batch
    for index, call in enumerate(calls):
        key = None if slot is None else slot(call)
        if _batchable(call):
            at = open_batch.get(key)
            if at is not None and len(groups[at][1]) < limit:
                groups[at][0].append(call)
                groups[at][1].append(index)
                continue
            open_batch[key] = len(groups)
        else:
            open_batch.pop(key, None)
        groups.append(([call], [index]))
    # A lone join or leave goes as a batch too: the script every batch loads, not one of
    # its own to load first (on one server it is a node's most frequent write).
    return [(parts[0] if len(parts) == 1 and parts[0].script not in scripts.ONE_SERVER
             else _batch(parts), indexes) for parts, indexes in groups]  # fmt: skip


def split(sent: Sequence[Sent], replies: Sequence[Any], count: int) -> list[Any]:
    """Each submitted call's parsed result (or exception), from the replies to ``sent``."""
    results: list[Any] = [None] * count
    for (call, indexes), reply in zip(sent, replies, strict=True):
        if not call.parts:  # a call of its own, not a batch
            results[indexes[0]] = _parse(call, reply)
            continue
        parts = call.parts
        for position, index in enumerate(indexes):
            if isinstance(reply, Exception):  # the whole call failed
                results[index] = reply
            else:
                results[index] = _parse(parts[position], reply[position])
    return results


def scope(call: Call[Any]) -> str | None:
    """The channel a registry write is confined to: it touches only that channel's record
    and memberships (and counts that commute with other channels' writes). None for
    any other call, which must keep its place among all writes."""
    shape = scripts.BATCHABLE.get(call.script)
    if shape is None or len(call.args) <= shape[3]:
        return None
    channel: str = call.args[shape[3]]
    return channel


def _parse(call: Call[Any], reply: Any) -> Any:
    if isinstance(reply, Exception):
        return reply
    try:
        return call.parse(reply)
    except Exception as exc:
        return exc


def _batchable(call: Call[Any]) -> bool:
    shape = scripts.BATCHABLE.get(call.script)
    return shape is not None and len(call.keys) == shape[1] and len(call.args) == shape[2]


def _batch(parts: list[Call[Any]]) -> Call[Any]:
    keys = [key for part in parts for key in part.keys]
    args = [arg for part in parts for arg in (scripts.BATCHABLE[part.script][0], *part.args)]
    return Call(scripts.REGISTRY_BATCH, keys, args, list, tuple(parts))
