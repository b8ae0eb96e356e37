"""Minimal Django settings for the plain chat consumer; the layer comes from the environment.

``BENCH_LAYER``: ``broadcast`` (this layer, default) or ``pubsub`` (channels_redis's
``RedisPubSubChannelLayer``). ``REDIS_URL``: the Redis both use.
"""

from __future__ import annotations

import os

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
USE_TZ = True

_BACKENDS = {
    "broadcast": "broadcast_layer.layer.BroadcastChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": _BACKENDS[os.environ.get("BENCH_LAYER", "broadcast")],
        "CONFIG": {"hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")]},
    }
}
