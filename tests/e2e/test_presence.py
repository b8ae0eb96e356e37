"""Presence lists across two real Daphne nodes: joins, leaves and a node killed with SIGKILL.

Each client keeps its list the way the room page does (one list on join, then diffs),
and never asks for the list again; the lists must end equal to the registry.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from broadcast_layer.layer import BroadcastChannelLayer

from ..conftest import eventually
from ..faults import sigkill
from ..test_demo_presence import PresenceView
from .conftest import DaphneFactory, DaphneNode
from .test_daphne import join

# Short heartbeats so a killed node is found dead within seconds.
FAST_REGISTRY = {"DEMO_HEARTBEAT": "0.5", "DEMO_NODE_TTL": "2"}
WAIT = 20.0


class Client:
    """A chat socket whose presence list is kept up to date by a reader task."""

    def __init__(self, ws: ClientConnection, node: DaphneNode) -> None:
        self.ws, self.node, self.view = ws, node, PresenceView()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.view.apply(json.loads(raw))
        except ConnectionClosed:
            pass

    def shows(self) -> Counter[tuple[str, str]]:
        return Counter((p["name"], p["node"]) for p in self.view.people.values())


@pytest.fixture
async def clients() -> AsyncIterator[tuple[AsyncExitStack, list[Client]]]:
    async with AsyncExitStack() as stack:
        opened: list[Client] = []
        yield stack, opened
        for client in opened:
            client.reader.cancel()
        await asyncio.gather(*(client.reader for client in opened), return_exceptions=True)


async def registry_shows(layer: BroadcastChannelLayer, group: str) -> Counter[tuple[str, str]]:
    return Counter((str(m.metadata.get("name")), str(m.metadata.get("node")))
                   for m in await layer.registry.members(group))  # fmt: skip


@pytest.mark.slow
async def test_lists_follow_joins_leaves_and_a_killed_node(
    daphne: DaphneFactory, clients: tuple[AsyncExitStack, list[Client]], redis_url: str
) -> None:
    stack, opened = clients
    node_a, node_b = daphne("node-a", "node-b", env=FAST_REGISTRY)
    room = f"presence-{uuid.uuid4().hex[:8]}"
    group = f"chat.{room}"
    observer_layer = BroadcastChannelLayer(hosts=[redis_url], heartbeat_interval=0.5, node_ttl=2)
    stack.push_async_callback(observer_layer.close)

    async def enter(node: DaphneNode) -> Client:
        client = Client(await stack.enter_async_context(join(node, room)), node)
        opened.append(client)
        return client

    async def lists_equal_the_registry(people: int) -> None:
        async def agree() -> bool:
            truth = await registry_shows(observer_layer, group)
            return sum(truth.values()) == people and all(
                c.shows() == truth and c.view.total == people
                for c in opened if not c.ws.close_code and c.node.process.poll() is None
            )  # fmt: skip

        await eventually(agree, WAIT)

    # three people on each node, joining in turn
    for _ in range(3):
        await enter(node_a)
        await enter(node_b)
    await lists_equal_the_registry(6)

    # one leaves cleanly on each node
    for client in (opened[2], opened[3]):
        await client.ws.close()
    await lists_equal_the_registry(4)

    # node-b dies without a word: its people leave node-a's lists
    sigkill(node_b.process)
    await lists_equal_the_registry(2)
    survivors = [c for c in opened if c.node is node_a and not c.ws.close_code]
    assert len(survivors) == 2
    for client in survivors:
        assert {node for _, node in client.shows()} == {"node-a"}
        # the list on join, then diffs and the dead node's notice: never polled
        assert client.view.frames < 20
