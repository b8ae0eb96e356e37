"""The demo's history in Chromium: a page shows a room's last lines on joining, and after
its node restarts it recovers the lines it missed, once each, or says it could not."""

from __future__ import annotations

import signal
import uuid

import pytest
import redis

from broadcast_layer import BroadcastChannelLayer

from .conftest import DaphneFactory
from .test_demo_browser import WAIT_MS, enter, say

playwright_api = pytest.importorskip("playwright.async_api")
#: demo_chat/settings.py's history (the demo's default prefix, "asgi").
DEMO_HISTORY = {"chatlog.*": {"size": 100, "ttl": 86400}}


@pytest.mark.slow
async def test_a_page_recovers_what_it_missed_while_its_node_restarted(
    browser: object, daphne: DaphneFactory, redis_url: str
) -> None:
    expect = playwright_api.expect
    (node,) = daphne("node-a")
    room = f"room-{uuid.uuid4().hex[:6]}"
    lines = f"chatlog.{room}"
    layer = BroadcastChannelLayer(hosts=[redis_url], history=DEMO_HISTORY)

    async def line(text: str) -> None:  # as another node (or the worker) would send it
        await layer.group_send(lines, {"type": "chat.message", "text": text, "node": "elsewhere"})

    try:
        await line("said before Ann came")
        ann = await enter(browser, node, "Ann", room)
        log = ann.locator("#log li.message")  # type: ignore[attr-defined]
        await expect(log).to_have_text(["[elsewhere]said before Ann came"], timeout=WAIT_MS)
        await say(ann, "hello")
        shown = ["[elsewhere]said before Ann came", "[node-a]Ann: hello"]
        await expect(log).to_have_text(shown, timeout=WAIT_MS)

        # the node dies; lines are sent meanwhile; it comes back on the same address
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()
        status = ann.locator("#status")  # type: ignore[attr-defined]
        await expect(status).to_contain_text("Reconnecting", timeout=WAIT_MS)
        await line("missed 1")
        await line("missed 2")
        (node,) = daphne("node-a", port=node.port)
        await expect(status).to_have_text("Connected", timeout=WAIT_MS)
        shown += ["[elsewhere]missed 1", "[elsewhere]missed 2"]
        await expect(log).to_have_text(shown, timeout=WAIT_MS)  # each once, in order
        await line("live again")
        await expect(log).to_have_text([*shown, "[elsewhere]live again"], timeout=WAIT_MS)
        errors = ann.locator("#log li.error")  # type: ignore[attr-defined]
        assert await errors.count() == 0

        # now the room's history is lost while the page is away: it says so
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()
        await expect(status).to_contain_text("Reconnecting", timeout=WAIT_MS)
        client = redis.Redis.from_url(redis_url)
        try:
            client.delete(f"asgi:history:{{{lines}}}", f"asgi:history:{{{lines}}}:meta")
        finally:
            client.close()
        await line("after the loss")
        daphne("node-a", port=node.port)
        await expect(errors).to_contain_text("could not be recovered", timeout=WAIT_MS)
        await expect(ann.locator("#log")).to_contain_text("after the loss")  # type: ignore[attr-defined]
    finally:
        await layer.close()
