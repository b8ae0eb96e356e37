"""`make demo` as a user runs it: no secret on any command line, a locked-down Redis, no DEBUG.

The launcher runs under an audit hook that records the argv and environment of every
process it starts, including the short-lived ``manage.py demo_account``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty, Queue
from urllib.parse import urlparse

import psutil
import pytest
import redis

from ..test_embedded import unauthenticated_ping
from .conftest import REPO_ROOT, _free_port, http_get

STARTUP_TIMEOUT = 90.0

RUN_WITH_AUDIT = """
import json, os, sys
log = open(os.environ["ARGV_LOG"], "a")
def hook(event, args):
    if event == "subprocess.Popen":
        argv = [str(arg) for arg in args[1]]
        values = list((args[3] or {}).values())
        log.write(json.dumps({"argv": argv, "env_values": values}) + "\\n")
        log.flush()
sys.addaudithook(hook)
from demo_chat.launcher import main
sys.exit(main())
"""


def read_lines(stream, queue: Queue[str]) -> None:
    for line in iter(stream.readline, ""):
        queue.put(line)


def wait_for_line(queue: Queue[str], pattern: str, seen: list[str]) -> re.Match[str]:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = queue.get(timeout=1)
        except Empty:
            continue
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    pytest.fail(f"no line matching {pattern!r} in:\n{''.join(seen)}")


@pytest.mark.slow
def test_make_demo_keeps_secrets_off_argv_and_locks_redis_down(tmp_path: Path) -> None:
    argv_log = tmp_path / "argv.jsonl"
    ports = [_free_port(), _free_port()]
    env = {key: value for key, value in os.environ.items()
           if key not in {"REDIS_URL", "DJANGO_DEBUG", "DEMO_ALLOWED_ORIGINS"}}  # fmt: skip
    env.update({"ARGV_LOG": str(argv_log), "DEMO_PORTS": ",".join(map(str, ports)),
                "DEMO_DB_PATH": str(tmp_path / "db.sqlite3"),
                "DJANGO_SECRET_KEY": "e2e-tests-only-not-secret"})  # fmt: skip
    launcher = subprocess.Popen(
        [sys.executable, "-c", RUN_WITH_AUDIT], cwd=REPO_ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    lines: Queue[str] = Queue()
    seen: list[str] = []
    reader = threading.Thread(target=read_lines, args=(launcher.stdout, lines), daemon=True)
    reader.start()
    try:
        staff_password = wait_for_line(lines, r"password '([^']+)'", seen)[1]
        redis_url = (REPO_ROOT / ".demo" / "redis_url").read_text().strip()
        redis_password = urlparse(redis_url).password
        assert redis_password
        # Wait until both nodes answer (they print before they listen).
        for port in ports:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                try:
                    status, body = http_get(port, "/no-such-page/")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"node on {port} never answered:\n{''.join(seen)}")
                    time.sleep(0.2)  # start-up only
            assert status == 404
            assert "DEBUG = True" not in body  # the generic 404 page, not the debug one

        # No secret on any command line: neither what the launcher passed...
        started = [json.loads(line) for line in argv_log.read_text().splitlines()]
        assert any("demo_account" in entry["argv"] for entry in started)
        for entry in started:
            for secret in (staff_password, redis_password):
                assert not any(secret in arg for arg in entry["argv"]), entry["argv"]
            if "demo_account" not in entry["argv"]:  # the staff password goes there alone
                assert staff_password not in entry["env_values"], entry["argv"]
        # ... nor what is running now (ps shows this to every local user).
        for child in psutil.Process(launcher.pid).children(recursive=True):
            cmdline = " ".join(child.cmdline())
            assert staff_password not in cmdline
            assert redis_password not in cmdline
        assert redis_password not in "".join(seen)  # not printed either

        # The embedded Redis: password required, loopback only, protected mode on.
        port = urlparse(redis_url).port
        assert unauthenticated_ping(port).startswith(b"-NOAUTH")
        client = redis.Redis.from_url(redis_url)
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        client.close()
        assert oct((REPO_ROOT / ".demo" / "redis_url").stat().st_mode & 0o777) == "0o600"
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(timeout=30)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
        reader.join(timeout=10)
        launcher.stdout.close()  # type: ignore[union-attr]
        while not lines.empty():
            seen.append(lines.get())
    assert launcher.returncode == 0, "".join(seen)
    assert not (REPO_ROOT / ".demo" / "redis_url").exists()
