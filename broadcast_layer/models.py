"""Placeholder models for the admin: no table, only permissions and a place on the index.

Rooms and nodes live in Redis (see ``registry.py``), not in the database. These
unmanaged models exist so that Django's admin lists "Rooms" and "Nodes" under the app,
so that the usual permissions (``view_room``, ``change_room``, ``view_node``) can be
granted to staff, and so that admin actions can be recorded as ``LogEntry`` rows about
a room. No instance is ever saved; the admin builds unsaved ones to name a room or node.
"""

from __future__ import annotations

from django.db import models


class Room(models.Model):
    """A group with members, as listed by the registry (no table: rooms are in Redis)."""

    name = models.CharField(max_length=100, primary_key=True)

    class Meta:
        managed = False  # no table: rooms are in Redis
        default_permissions = ("view", "change")  # change: send, remove, disconnect

    def __str__(self) -> str:
        return self.name


class Node(models.Model):
    """A live server process, as listed by the registry (no table: nodes are in Redis)."""

    id = models.CharField(max_length=32, primary_key=True)

    class Meta:
        managed = False  # no table: nodes are in Redis
        default_permissions = ("view",)

    def __str__(self) -> str:
        return self.id
