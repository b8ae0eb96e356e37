"""One node per event loop: created on first use, closed just before its loop closes.

One layer instance serves every event loop in the process (Daphne's, the fresh ones
``async_to_sync`` makes); :class:`LoopNodes` gives each loop its own :class:`~.node.Node`.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable

from .node import Node


class LoopNodes:
    """The nodes of one layer, by event loop."""

    def __init__(self, make_node: Callable[[], Node]) -> None:
        # A factory, not a config and a serializer: the layer's serializer is read when
        # each node is made (tests swap it in after the layer was built).
        self._make_node = make_node
        self._nodes: dict[asyncio.AbstractEventLoop, Node] = {}
        self._wrapped_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        # The node last returned by current(), with its loop. On Python 3.11
        # asyncio.get_running_loop() makes a getpid() system call each time (about 0.2 us,
        # a tenth of a delivery's cost in a busy consumer); an asyncio loop's _thread_id
        # is this thread's while, and only while, it runs here, so checking it finds the
        # running loop without one. Only for asyncio's own loops, whose attribute means that.
        self._last: tuple[asyncio.BaseEventLoop, Node] | None = None

    def __len__(self) -> int:
        """How many loops have an open node."""
        return len(self._nodes)

    def current(self) -> Node:
        """The running loop's node, created (and tied to the loop's close) on first use."""
        last = self._last
        if last is not None and last[0]._thread_id == threading.get_ident():  # type: ignore[attr-defined]
            return last[1]
        loop = asyncio.get_running_loop()
        node = self._nodes.get(loop)
        if node is None:
            node = self._nodes[loop] = self._make_node()
            if loop not in self._wrapped_loops:
                self._wrapped_loops.add(loop)
                self._close_with(loop)
        if isinstance(loop, asyncio.BaseEventLoop):
            self._last = (loop, node)
        return node

    def existing(self) -> Node | None:
        """The running loop's node if it has one (nothing is created)."""
        return self._nodes.get(asyncio.get_running_loop())

    def detach(self) -> Node | None:
        """Remove the running loop's node and return it (the caller closes it)."""
        self._last = None
        return self._nodes.pop(asyncio.get_running_loop(), None)

    def new_unattached(self) -> Node:
        """A node tied to no loop (for a one-off job such as flush)."""
        return self._make_node()

    def _close_with(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the loop's node just before the loop closes, so nothing leaks."""
        original_close = loop.close

        def close() -> None:
            self._last = None
            node = self._nodes.pop(loop, None)
            if node is not None and not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(node.close())
            loop.close = original_close  # type: ignore[method-assign]
            original_close()

        loop.close = close  # type: ignore[method-assign]
