"""The chat app's routes: WebSocket paths, and the worker's channel."""

from django.urls import path

from .consumers import ChatConsumer
from .worker import COMMANDS_CHANNEL, CommandWorker

websocket_urlpatterns = [
    path("ws/chat/<str:room_name>/", ChatConsumer.as_asgi()),
]

worker_channels = {COMMANDS_CHANNEL: CommandWorker.as_asgi()}
