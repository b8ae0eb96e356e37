"""Fixtures that run the demo project (``demo_chat``) in real Daphne processes, one per node."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 10.0


@dataclass
class DaphneNode:
    """One Daphne process serving an ASGI application (the demo's by default) on a port."""

    name: str
    port: int
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        """The one Origin header the demo's OriginValidator accepts on this node."""
        return self.base_url

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


DaphneFactory = Callable[..., list[DaphneNode]]

# The nodes a test started, so a failed test's report can show what they logged.
_NODES = pytest.StashKey[list[DaphneNode]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for node in item.stash.get(_NODES, []):
            report.sections.append((f"daphne {node.name} output", node.output()))
    return report


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_until_listening(nodes: list[DaphneNode]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    waiting = list(nodes)
    while waiting:
        for node in list(waiting):
            if node.process.poll() is not None:
                pytest.fail(
                    f"daphne {node.name} exited at start with {node.process.returncode}:\n"
                    f"{node.output()}"
                )
            if _accepts_connections(node.port):
                waiting.remove(node)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(node.name for node in waiting)
            pytest.fail(f"daphne {names} not listening after {STARTUP_TIMEOUT}s")
        if waiting:
            time.sleep(0.05)  # start-up only, never on a hot path


def _stop(node: DaphneNode) -> None:
    if node.process.poll() is None:
        node.process.terminate()
    try:
        node.process.wait(timeout=SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        node.process.kill()
        node.process.wait()


@pytest.fixture
def daphne(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: Path
) -> Iterator[DaphneFactory]:
    """Start Daphne processes named by the arguments; all are stopped at teardown.

    They serve the demo unless ``app`` names another application (``env`` then sets
    its ``DJANGO_SETTINGS_MODULE``). Each process's output goes to a file (a pipe
    nobody reads would eventually block it), which a failed test's report shows.
    """
    started: list[DaphneNode] = []
    request.node.stash[_NODES] = started

    def start(
        *names: str,
        env: dict[str, str] | None = None,
        app: str = "demo_chat.asgi:application",
        port: int | None = None,
    ) -> list[DaphneNode]:
        """``port``: for one node restarted where a dead one was (its pages reconnect)."""
        nodes: list[DaphneNode] = []
        extra_env = env or {}
        for name in names:
            node_port = port or _free_port()
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "demo_chat.settings",
                "DJANGO_SECRET_KEY": "e2e-tests-only-not-secret",
                "REDIS_URL": redis_url,
                "NODE_NAME": name,
                # The demo accepts WebSockets from exact origins only: this node's own.
                "DEMO_ALLOWED_ORIGINS": f"http://127.0.0.1:{node_port}",
                **extra_env,
            }
            command = [
                sys.executable, "-m", "daphne",
                "-b", "127.0.0.1", "-p", str(node_port),
                app,
            ]  # fmt: skip
            log_path = tmp_path / f"daphne-{name}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    command,
                    cwd=REPO_ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            nodes.append(DaphneNode(name, node_port, process, log_path))
            started.append(nodes[-1])
        _wait_until_listening(nodes)
        return nodes

    try:
        yield start
    finally:
        for node in started:
            if node.process.poll() is None:
                node.process.terminate()  # all at once, so they shut down in parallel
        for node in started:
            _stop(node)


@pytest.fixture
def two_nodes(daphne: DaphneFactory) -> list[DaphneNode]:
    """Two demo servers, node-a and node-b, sharing the test Redis."""
    return daphne("node-a", "node-b")


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's headless Chromium driven by Playwright (skips when either is missing)."""
    playwright_api = pytest.importorskip("playwright.async_api")
    if not HAVE_CHROMIUM:
        pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it")
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where browser tests save screenshots: docs/images/ with SAVE_SCREENSHOTS=1
    (``make screenshots``), else a temporary folder, so a test run leaves the tree clean.
    """
    if os.environ.get("SAVE_SCREENSHOTS"):
        return REPO_ROOT / "docs" / "images"
    return tmp_path


def http_get(port: int, path: str, timeout: float = 30) -> tuple[int, str]:
    """GET ``path`` from a local server; its status and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()
