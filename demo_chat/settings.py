"""Django settings for the demo chat; everything deployment-specific comes from the environment.

``DJANGO_SECRET_KEY``     the secret key; if unset, a demo-only key kept in ``.demo/secret_key``
``DJANGO_DEBUG``          "1" turns DEBUG on; anything else, or unset, leaves it off
``REDIS_URL``             the channel layer's Redis; if unset, the one ``make demo`` started
                          (its URL, with its password, is in ``.demo/redis_url`` while it
                          runs), else ``redis://127.0.0.1:6379/0``
``REDIS_CLUSTER``         startup nodes of a Redis Cluster (7+), comma-separated URLs; when
                          set, the layer runs in cluster mode and ``REDIS_URL`` is ignored
``DEMO_PORTS``            the nodes' ports (default "8001,8002"), for the origins below
``DEMO_ALLOWED_ORIGINS``  the exact origins a WebSocket may come from, comma-separated
                          (default: http://127.0.0.1, localhost and [::1] on DEMO_PORTS)
``DEMO_DB_PATH``          the SQLite database (default ``.demo/db.sqlite3``); tests use their own
``DEMO_PRESENCE_INTERVAL``  seconds a node batches its members' joins and leaves of a room
                          into one presence diff (default 0.5)
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.core.management.utils import get_random_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_DIR = BASE_DIR / ".demo"  # git-ignored: the demo's database and generated key
DEMO_DIR.mkdir(exist_ok=True)


def _demo_secret_key() -> str:
    """Read the demo key, creating it on first use.

    Several Daphne processes may start at once and must all end up with the same key
    (sessions are shared), so the file is written under a temporary name and linked
    into place, which fails instead of overwriting when another process won the race.
    """
    path = DEMO_DIR / "secret_key"
    if not path.exists():
        tmp = DEMO_DIR / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(get_random_secret_key())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def _redis_url() -> str:
    """REDIS_URL, else the URL of the Redis ``make demo`` is running, else the default."""
    if url := os.environ.get("REDIS_URL"):
        return url
    try:  # written by the launcher, readable by this user only
        return (DEMO_DIR / "redis_url").read_text().strip()
    except FileNotFoundError:
        return "redis://127.0.0.1:6379/0"


def _redis_hosts() -> dict[str, object]:
    """The layer's ``hosts`` (and ``cluster``): REDIS_CLUSTER's startup nodes, else one URL."""
    if cluster := os.environ.get("REDIS_CLUSTER"):
        nodes = [url.strip() for url in cluster.split(",") if url.strip()]
        return {"hosts": nodes, "cluster": True}
    return {"hosts": [_redis_url()]}


def _allowed_origins() -> list[str]:
    """Exact scheme://host:port origins: a page from another port of the same host is refused."""
    if origins := os.environ.get("DEMO_ALLOWED_ORIGINS"):
        return [origin.strip() for origin in origins.split(",") if origin.strip()]
    ports = os.environ.get("DEMO_PORTS", "8001,8002").split(",")
    return [f"http://{host}:{port.strip()}" for port in ports
            for host in ("127.0.0.1", "localhost", "[::1]")]  # fmt: skip


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _demo_secret_key()
# Off unless asked for: a debug page shows settings, paths and code to anyone.
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
#: Checked on every WebSocket handshake (see asgi.py).
CHAT_ALLOWED_ORIGINS = _allowed_origins()

INSTALLED_APPS = [
    "daphne",  # first, so its runserver replaces Django's with an ASGI one
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "broadcast_layer",
    "demo_chat.chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_chat.urls"
ASGI_APPLICATION = "demo_chat.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB_PATH") or DEMO_DIR / "db.sqlite3",
    },
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
        "CONFIG": {
            **_redis_hosts(),
            # Short so a killed node leaves everyone's presence lists quickly.
            "heartbeat_interval": float(os.environ.get("DEMO_HEARTBEAT", "2")),
            "node_ttl": float(os.environ.get("DEMO_NODE_TTL", "6")),
            # Each room keeps its last 100 lines for a day; a reconnecting page recovers.
            "history": {"chatlog.*": {"size": 100, "ttl": 86400}},
            # A /roll taken by a worker that dies is answered by another 5 s later.
            "durable_channels": {"chat-commands": {"claim_after": 5}},
        },
    },
}

#: Seconds each node collects its members' joins and leaves of a room before sending them
#: to the room as one presence diff (see chat/presence.py).
CHAT_PRESENCE_INTERVAL = float(os.environ.get("DEMO_PRESENCE_INTERVAL", "0.5"))

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

# Sessions (the chosen display name) live in a signed cookie: nodes share no session table.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
