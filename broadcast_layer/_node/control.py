"""Control messages between nodes: ask the owner of a channel to act, and answer such asks.

A join, leave or disconnect of a channel owned by another node is sent to that node on
its channel (sealed by :class:`~broadcast_layer._protocol.control.ControlCodec`); the
owner applies it and acknowledges, and the asking node waits for the acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable

from .._protocol.control import ControlCodec
from .._redis.errors import CONNECTION_ERRORS
from ..exceptions import RedisUnavailable
from .core import NodeCore
from .drops import DropLog

logger = logging.getLogger(__name__)

#: Applies an operation asked by another node; returns whether this node has the channel.
Apply = Callable[[dict[str, str]], Awaitable[bool]]


class Control:
    """Sends control messages, matches their acknowledgements, applies incoming ones."""

    def __init__(self, core: NodeCore, rejected: DropLog, apply: Apply) -> None:
        self._core = core
        self._apply = apply
        config = core.config
        self.codec = ControlCodec(config.symmetric_encryption_keys, config.expiry + 10,
                                  rejected.drop)  # fmt: skip
        self._acks: dict[str, asyncio.Future[bool]] = {}

    async def _send(self, node_id: str, op: str, **fields: str) -> int:
        payload = self.codec.seal(node_id, {"op": op, **fields})
        return await self._core.host_for(node_id).publisher.publish(
            self._core.keys.node_channel(node_id), payload
        )

    async def request(self, node_id: str, op: str, **fields: str) -> bool:
        """Ask another node to apply ``op`` and wait for its confirmation.

        Returns whether that node has the channel: False without waiting when the node
        is not listening (it is gone).
        """
        await self._core.listen()  # the confirmation comes back on this node's channel
        request = uuid.uuid4().hex
        confirmed = self._acks[request] = asyncio.get_running_loop().create_future()
        try:
            if not await self._send(node_id, op, reply_to=self._core.id, request=request,
                                    **fields):  # fmt: skip
                return False
            async with asyncio.timeout(self._core.config.subscribe_timeout):
                found: bool = await confirmed
            return found
        except TimeoutError:
            raise RedisUnavailable(f"Node {node_id} did not confirm {op} in time") from None
        finally:
            self._acks.pop(request, None)

    def on_control(self, op: dict[str, str]) -> None:
        """An opened control message for this node: settle an ack, or apply the operation."""
        if op.get("op") == "ack":
            confirmed = self._acks.get(op.get("request", ""))
            if confirmed is not None and not confirmed.done():
                if op.get("ok"):
                    confirmed.set_result(bool(op.get("found")))
                else:
                    confirmed.set_exception(RedisUnavailable("The owning node could not apply it"))
        else:
            self._core.spawn(self._answer(op))

    async def _answer(self, op: dict[str, str]) -> None:
        """Carry out a control operation sent by another node, then confirm it."""
        ok, found = "1", ""
        try:
            found = "1" if await self._apply(op) else ""
        except Exception:
            ok = ""
            logger.exception("Could not apply %s for another node", op.get("op"))
        if op.get("reply_to"):
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._send(
                    op["reply_to"], "ack", request=op.get("request", ""), ok=ok, found=found
                )
