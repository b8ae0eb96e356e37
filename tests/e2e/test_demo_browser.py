"""The demo as a person uses it: two browsers on two nodes, in real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO_ROOT, DaphneFactory, DaphneNode

playwright_api = pytest.importorskip("playwright.async_api")
# Short heartbeats so a killed node leaves the presence lists within seconds.
FAST_REGISTRY = {"DEMO_HEARTBEAT": "0.5", "DEMO_NODE_TTL": "2"}
WAIT_MS = 15_000


@pytest.fixture
def worker(redis_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`manage.py chat_worker`, the demo's backend."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo_chat.settings", "REDIS_URL": redis_url,
           "DJANGO_SECRET_KEY": "e2e-tests-only-not-secret", **FAST_REGISTRY}  # fmt: skip
    with (tmp_path / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "chat_worker"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    yield process
    process.terminate()
    process.wait(10)


async def enter(
    browser: object, node: DaphneNode, name: str, room: str, sent: list[str] | None = None
) -> object:
    """A person on ``node``: saves a display name, then opens the room.

    ``sent`` collects every WebSocket frame the page sends.
    """
    context = await browser.new_context()  # type: ignore[attr-defined]
    page = await context.new_page()
    if sent is not None:

        def record(frame: str | bytes) -> None:
            sent.append(frame if isinstance(frame, str) else frame.decode())

        page.on("websocket", lambda ws: ws.on("framesent", record))
    await page.goto(f"{node.base_url}/")
    await page.fill("#name", name)
    await page.click("text=Save")
    await page.fill("#room", room)
    await page.click("text=Create or join")
    await playwright_api.expect(page.locator("#status")).to_have_text("Connected")
    return page


TRY_SOCKET = """async (url) => await new Promise((resolve) => {
  const socket = new WebSocket(url);
  socket.onopen = () => { socket.close(); resolve("open"); };
  socket.onclose = () => resolve("refused");
})"""


async def internal_groups_cannot_be_joined(browser: Any, node: DaphneNode, room: str) -> None:
    """Someone on the page tries the site's internal groups as rooms: every way is shut.

    ``broadcast.all`` has members right now (every chat socket is in it), yet the room
    list does not show it, the room form and the room URL refuse it, and a WebSocket the
    page opens to it is refused; so is a user's group.
    """
    expect = playwright_api.expect
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{node.base_url}/")
    await expect(page.locator("#rooms")).to_contain_text(room, timeout=WAIT_MS)
    await expect(page.locator("#rooms")).not_to_contain_text("broadcast")
    await expect(page.locator("#rooms")).not_to_contain_text("user.")

    await page.fill("#room", "broadcast.all")
    await page.click("text=Create or join")  # the form's pattern stops it in the browser
    await expect(page).to_have_url(f"{node.base_url}/")
    await page.goto(f"{node.base_url}/?room=broadcast.all")  # and the server refuses it
    await expect(page.locator(".error")).to_contain_text("Use letters, digits")
    response = await page.goto(f"{node.base_url}/room/broadcast.all/")
    assert response.status == 404

    await page.goto(f"{node.base_url}/room/{room}/")  # a page of this origin
    for group in ("broadcast.all", "user.1"):
        url = node.ws_url(f"/ws/chat/{group}/")
        assert await page.evaluate(TRY_SOCKET, url) == "refused", group
    assert await page.evaluate(TRY_SOCKET, node.ws_url(f"/ws/chat/{room}/")) == "open"


async def say(page: object, text: str) -> None:
    await page.fill("#text", text)  # type: ignore[attr-defined]
    await page.press("#text", "Enter")  # type: ignore[attr-defined]


async def test_two_people_on_two_nodes(
    browser: object,
    daphne: DaphneFactory,
    worker: subprocess.Popen[bytes],
    redis_url: str,
    screenshots: Path,
) -> None:
    expect = playwright_api.expect
    node_a, node_b = daphne("node-a", "node-b", env=FAST_REGISTRY)
    room = f"room-{uuid.uuid4().hex[:6]}"
    sent: list[str] = []  # what Ann's and Bob's pages send
    ann = await enter(browser, node_a, "Ann", room, sent)
    bob = await enter(browser, node_b, "Bob", room, sent)

    # each sees the other in the room's presence list: Bob's page read it on joining,
    # Ann's got Bob's join as a diff from node-b
    for page in (ann, bob):
        await expect(page.locator("#presence")).to_contain_text("Ann (node-a)", timeout=WAIT_MS)
        await expect(page.locator("#presence")).to_contain_text("Bob (node-b)", timeout=WAIT_MS)

    # someone comes and goes on node-b: both lists follow, from diffs alone
    cid = await enter(browser, node_b, "Cid", room)
    for page in (ann, bob):
        await expect(page.locator("#presence")).to_contain_text("Cid (node-b)", timeout=WAIT_MS)
    await cid.context.close()  # type: ignore[attr-defined]
    for page in (ann, bob):
        await expect(page.locator("#presence")).not_to_contain_text("Cid", timeout=WAIT_MS)
    await expect(ann.locator("#presence li")).to_have_count(2)

    # messages cross nodes, each shown once
    await say(ann, "hello from <b>Ann</b>")
    for page in (ann, bob):
        await expect(page.locator("#log li.message")).to_have_text(
            ["[node-a]Ann: hello from <b>Ann</b>"], timeout=WAIT_MS
        )  # the markup arrives as text: escaped, never rendered
    assert await bob.locator("#log b").count() == 0

    # a CLI broadcast reaches the room on both nodes as an announcement
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo_chat.settings", "REDIS_URL": redis_url,
           "DJANGO_SECRET_KEY": "e2e-tests-only-not-secret"}  # fmt: skip
    command = await asyncio.create_subprocess_exec(
        sys.executable, "manage.py", "broadcast", f"chat.{room}", "maintenance in 5 minutes",
        cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    assert await command.wait() == 0
    for page in (ann, bob):
        await expect(page.locator("#log li.announcement")).to_contain_text(
            "maintenance in 5 minutes", timeout=WAIT_MS
        )

    # the worker answers /roll to the room and /who to the asker alone
    await say(bob, "/roll 20")
    for page in (ann, bob):
        await expect(page.locator("#log")).to_contain_text("Bob rolled", timeout=WAIT_MS)
    await say(ann, "/who")
    await expect(ann.locator("#log li.private")).to_contain_text(
        f"In {room}: Ann, Bob", timeout=WAIT_MS
    )
    assert await bob.locator("#log li.private").count() == 0

    await ann.screenshot(path=str(screenshots / "demo-chat.png"))

    await internal_groups_cannot_be_joined(browser, node_a, room)

    # a node that dies leaves the others' presence lists within the heartbeat TTL
    node_b.process.send_signal(signal.SIGKILL)
    await expect(ann.locator("#presence")).not_to_contain_text("Bob", timeout=WAIT_MS)
    await expect(ann.locator("#presence")).to_contain_text("Ann (node-a)")

    # all along, no page asked for the list again: it was read once, on joining
    requests = [frame for frame in sent if json.loads(frame).get("type") == "presence"]
    assert requests == []
    assert len(sent) == 3  # Ann's line, Bob's /roll and Ann's /who
