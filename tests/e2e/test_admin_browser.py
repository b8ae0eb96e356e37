"""The admin's Rooms and Nodes pages in real headless Chromium, on real Daphne nodes.

Staff log in to the demo's admin on node-a, find a room that WebSocket clients joined
through node-a and node-b, send the room a message the clients receive, disconnect
one of them and see it gone. ``make screenshots`` saves docs/images/ from this test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from ..conftest import eventually
from .conftest import REPO_ROOT, DaphneFactory, DaphneNode

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

TIMEOUT = 15.0
STAFF, MEMBER, PASSWORD = "staff", "member", "e2e-only-password"

# A staff user with exactly the app's permissions (not a superuser), and a non-staff one.
CREATE_USERS = f"""
from django.contrib.auth.models import Permission, User
staff = User.objects.create_user({STAFF!r}, password={PASSWORD!r}, is_staff=True)
staff.user_permissions.set(Permission.objects.filter(
    content_type__app_label="broadcast_layer",
    codename__in=["view_room", "change_room", "view_node"]))
User.objects.create_user({MEMBER!r}, password={PASSWORD!r})
"""


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated demo database holding the two users; the Daphne nodes are pointed at it."""
    path = tmp_path_factory.mktemp("demo-db") / "db.sqlite3"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo_chat.settings", "DEMO_DB_PATH": str(path),
           "DJANGO_SECRET_KEY": "e2e-tests-only-not-secret"}  # fmt: skip
    for command in (["migrate", "--noinput"], ["shell", "-c", CREATE_USERS]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=REPO_ROOT, env=env,
                       check=True, capture_output=True, timeout=120)  # fmt: skip
    return path


@pytest.fixture
def demo(daphne: DaphneFactory, demo_db: Path) -> DaphneFactory:
    """Start demo nodes that share the test database."""

    def start(*names: str) -> list[DaphneNode]:
        return daphne(*names, env={"DEMO_DB_PATH": str(demo_db)})

    return start


async def log_in(browser: Any, node: DaphneNode, username: str) -> Any:
    """A new browser session on the admin's login form, submitted as ``username``."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(f"{node.base_url}/admin/")
    await expect(page).to_have_url(f"{node.base_url}/admin/login/?next=/admin/")
    await page.fill("#id_username", username)
    await page.fill("#id_password", PASSWORD)
    await page.click("input[type=submit]")
    return page


def join(node: DaphneNode, room: str) -> connect:
    """A chat client; once the handshake completes it is a member of the room."""
    return connect(node.ws_url(f"/ws/chat/{room}/"), origin=Origin(node.origin), proxy=None)


async def receive_type(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of type ``kind`` (presence updates come and go meanwhile)."""
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


async def closed_code(ws: ClientConnection) -> int | None:
    """Read until the server closes the socket; the close code it sent."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def reload_until_gone(page: Any, locator: Any) -> None:
    """Reload until ``locator`` matches nothing: the page shows the registry as it is now,
    and another process updates the registry, so there is no event to wait for."""

    async def gone() -> bool:
        await page.reload()
        return await locator.count() == 0

    await eventually(gone, TIMEOUT)


async def test_staff_send_to_a_live_room_and_disconnect_a_member(
    browser: Any, demo: DaphneFactory, screenshots: Path
) -> None:
    node_a, node_b = demo("node-a", "node-b")
    async with (
        asyncio.timeout(60),
        join(node_a, "lobby") as ann,
        join(node_b, "lobby") as bob,
        join(node_b, "support"),
    ):
        page = await log_in(browser, node_a, STAFF)
        await expect(page.locator("#site-name")).to_contain_text("Django administration")

        # the admin index lists Rooms and Nodes under the app; the rooms list shows ours
        await page.click("#content-main a:text-is('Rooms')")
        # the demo's room "lobby" is the group chat.lobby
        lobby = page.locator("#result_list tbody tr", has_text="chat.lobby")
        await expect(lobby.locator(".field-size")).to_have_text("2")
        await expect(lobby.locator(".field-nodes")).to_have_text("2")
        await page.click("#result_list th a:text-is('Members')")  # sort by size
        await expect(page).to_have_url(f"{node_a.base_url}/admin/broadcast_layer/room/?o=size")
        await page.screenshot(path=str(screenshots / "admin-rooms.png"))
        await page.fill("#searchbar", "chat.lob*")
        await page.press("#searchbar", "Enter")
        await expect(page.locator("#result_list tbody tr")).to_have_count(1)

        # the room page lists both members with their node; a message reaches them
        await page.click("#result_list a:text-is('chat.lobby')")
        members = page.locator("#members tr.member")
        await expect(members).to_have_count(2)
        await expect(members.locator(".field-node a")).to_have_text(["node-a", "node-b"])
        await page.fill("#id_text", "The admin says hello")
        await page.click("#send-form input[type=submit]")
        await expect(page.locator(".messagelist .success")).to_contain_text(
            "chat.lobby: published to 2 nodes, 2 members"
        )
        for ws in (ann, bob):
            announcement = await receive_type(ws, "announcement")
            assert announcement["text"] == "The admin says hello"
        await page.screenshot(path=str(screenshots / "admin-room.png"), full_page=True)

        # disconnecting bob (on node-b, from node-a) closes his socket; he leaves the page
        await members.filter(has_text="node-b").locator("input.disconnect").click()
        await expect(page.locator(".messagelist .success")).to_contain_text("disconnect")
        assert await closed_code(bob) == 4000
        await reload_until_gone(page, members.filter(has_text="node-b"))
        await expect(members).to_have_count(1)

        # both actions are in the room's history, with who did them
        await page.click("a.historylink")
        history = page.locator("#change-history tbody")
        await expect(history.locator("tr")).to_have_count(2)
        await expect(history).to_contain_text("Sent a broadcast.message message to 2 members")
        await expect(history).to_contain_text(STAFF)

        # the Nodes page shows both Daphne processes
        await page.goto(f"{node_a.base_url}/admin/broadcast_layer/node/")
        for node in (node_a, node_b):
            pid = page.locator("#result_list .field-pid", has_text=str(node.process.pid))
            await expect(pid).to_have_count(1)


async def test_a_non_staff_user_is_refused(browser: Any, demo: DaphneFactory) -> None:
    (node,) = demo("node-a")
    page = await log_in(browser, node, MEMBER)
    await expect(page.locator(".errornote")).to_contain_text(
        "Please enter the correct username and password for a staff account"
    )
    await page.goto(f"{node.base_url}/admin/broadcast_layer/room/")
    await expect(page).to_have_url(
        f"{node.base_url}/admin/login/?next=/admin/broadcast_layer/room/"
    )
    await expect(page.locator("#id_username")).to_be_visible()
