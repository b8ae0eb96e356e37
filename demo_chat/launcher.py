"""`make demo`: start Redis (embedded unless REDIS_URL or REDIS_CLUSTER is set), migrate, run
two Daphne nodes.

Ctrl-C stops everything this started. No secret goes on a command line, where every
local user can read it (``ps``): the embedded Redis gets a random password through its
config file, the nodes get the Redis URL (password included) in their environment, and
the staff account's password goes to ``demo_account`` in its environment too.
``DEMO_PORTS`` (default "8001,8002") picks the nodes' ports.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.exceptions import EmbeddedRedisError

ROOT = Path(__file__).resolve().parent.parent
DEMO_USER = "admin"
#: Daphne with tuned garbage collection: young collections every 50,000 allocations
#: rather than 700, and start-up objects frozen out of full collections. Measured with
#: `python -m benchmarks.realclients` (docs/performance.md, "Garbage collection").
DAPHNE = (
    "import gc; gc.set_threshold(50_000, 20, 100); import demo_chat.asgi; gc.collect(); "
    "gc.freeze(); from daphne.cli import CommandLineInterface as c; c.entrypoint()"
)
#: While the demo runs, `manage.py broadcast` and `rooms` in another shell read the
#: embedded Redis's URL (and password) from here; only this user can read it.
REDIS_URL_FILE = ROOT / ".demo" / "redis_url"


def _nodes() -> list[tuple[str, int]]:
    ports = os.environ.get("DEMO_PORTS", "8001,8002").split(",")
    return [(f"node-{chr(ord('a') + i)}", int(port)) for i, port in enumerate(ports)]


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def _start_nodes(
    env: dict[str, str], nodes: list[tuple[str, int]]
) -> list[subprocess.Popen[bytes]]:
    # The backend worker of seed 002: answers /roll and /who from any node.
    processes = [subprocess.Popen([sys.executable, "manage.py", "chat_worker"],
                                  cwd=ROOT, env={**env, "NODE_NAME": "worker"})]  # fmt: skip
    for name, port in nodes:
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", DAPHNE, "-b", "127.0.0.1", "-p", str(port),
                 "demo_chat.asgi:application"],
                cwd=ROOT,
                env={**env, "NODE_NAME": name},
            )
        )  # fmt: skip
    return processes


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Run the demo until Ctrl-C (or SIGTERM); return the exit status."""
    # Explicit handlers: a shell that starts us in the background ignores SIGINT.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    redis_url = os.environ.get("REDIS_URL", "")
    embedded = None
    if not redis_url and not os.environ.get("REDIS_CLUSTER"):  # the settings read either
        try:
            # Loopback only, protected mode, and a password nobody is told but the nodes.
            embedded = EmbeddedRedis(password=secrets.token_urlsafe(24)).start()
        except EmbeddedRedisError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        redis_url = embedded.url
        _write_private(REDIS_URL_FILE, redis_url)
        print(f"Embedded Redis at 127.0.0.1:{embedded.port}, password-protected "
              "(set REDIS_URL to use your own)")  # fmt: skip
    nodes = _nodes()
    env = {**os.environ, "REDIS_URL": redis_url, "DJANGO_SETTINGS_MODULE": "demo_chat.settings",
           "DEMO_PORTS": ",".join(str(port) for _, port in nodes)}  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []
    try:
        _manage("migrate", "--noinput", "-v", "0", env=env)
        password = secrets.token_urlsafe(9)
        _manage("demo_account", DEMO_USER, env={**env, "DEMO_ACCOUNT_PASSWORD": password})
        processes = _start_nodes(env, nodes)
        for name, port in nodes:
            print(f"{name}: http://127.0.0.1:{port}/")
        print(f"Admin (demo only): http://127.0.0.1:{nodes[0][1]}/admin/ "
              f"user {DEMO_USER!r}, password {password!r}")  # fmt: skip
        print("Open both nodes in two browser windows and chat across them; try /roll and /who,")
        print('and `python manage.py broadcast chat.<room> "hello"`. Ctrl-C stops the demo.')
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)  # supervising child processes, not a hot path
        print("A node exited; stopping the demo.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except subprocess.CalledProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if embedded is not None:
            REDIS_URL_FILE.unlink(missing_ok=True)
            embedded.stop()


if __name__ == "__main__":
    sys.exit(main())
