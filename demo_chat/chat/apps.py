"""The chat app's configuration."""

from django.apps import AppConfig


class ChatConfig(AppConfig):  # type: ignore[misc]
    name = "demo_chat.chat"
    label = "chat"
