"""The embedded redis-server helper used by the demo and the tests."""

from __future__ import annotations

import pytest
import redis

from broadcast_layer import EmbeddedRedisError
from broadcast_layer.embedded import EmbeddedRedis, find_redis_server


def test_starts_a_private_server_and_stops_it():
    server = EmbeddedRedis()
    with server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        client.close()
    assert not server.running
    server.stop()  # idempotent


def test_restart_keeps_the_port():
    with EmbeddedRedis() as server:
        url = server.url
        server.restart()
        assert server.url == url
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.close()


def test_no_binary_gives_a_one_line_error_with_the_fix(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(EmbeddedRedisError) as info:
        find_redis_server()
    message = str(info.value)
    assert "\n" not in message
    assert "apt-get install redis-server" in message
    assert "broadcast-layer[embedded]" in message


def test_a_server_that_cannot_start_reports_why(tmp_path):
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot start' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(EmbeddedRedisError, match="cannot start"):
        EmbeddedRedis(binary=str(fake)).start()
