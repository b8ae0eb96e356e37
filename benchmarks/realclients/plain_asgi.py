"""The ASGI application of the plain chat consumer (WebSockets only)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.realclients.plain_settings")
django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from .plain_consumer import PlainChatConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("ws/chat/<str:room_name>/", PlainChatConsumer.as_asgi())])}
)
