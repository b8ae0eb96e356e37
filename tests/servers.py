"""What the test deployments (``tests/sentinel.py``, ``tests/cluster.py``) share."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import redis


class StartedServer(Protocol):
    """A redis-server process a deployment started: alive or not, its log, a client."""

    @property
    def alive(self) -> bool: ...

    @property
    def log(self) -> Path: ...

    def client(self) -> redis.Redis: ...


def answers(server: StartedServer, name: str) -> bool:
    """Whether the server answers PING; raises with its log's tail when it exited."""
    if not server.alive:
        raise RuntimeError(f"{name} exited: {server.log.read_text()[-500:]}")
    client = server.client()
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()
