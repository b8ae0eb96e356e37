"""Rooms and Nodes in Django's admin: placeholder models whose pages read Redis, not the DB.

Importing this package (Django's admin autodiscovery does) registers :class:`RoomAdmin`
and :class:`NodeAdmin` with the default admin site. Each one's pages are its own
methods, wired by its ``get_urls()``; ``forms`` holds their inputs and ``actions``
what they do to live rooms. See docs/admin.md.
"""

from __future__ import annotations

from django.contrib import admin

from ..models import Node, Room
from .base import RegistryAdmin
from .nodes import NodeAdmin
from .rooms import RoomAdmin

__all__ = ["NodeAdmin", "RegistryAdmin", "RoomAdmin"]

admin.site.register(Room, RoomAdmin)
admin.site.register(Node, NodeAdmin)
