"""Rooms and Nodes in Django's admin: placeholder models whose pages read Redis, not the DB.

Each ``ModelAdmin`` replaces the standard URLs with the views in ``admin_views``,
wrapped by ``admin_site.admin_view`` (staff login, CSRF, no caching). Permissions are
the models' own: ``view_room`` to see rooms, ``change_room`` to act on them,
``view_node`` to see nodes. See docs/admin.md.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from . import admin_views
from .models import Node, Room

View = Callable[..., HttpResponse]


class RegistryAdmin(admin.ModelAdmin):
    """An admin for a placeholder model: pages drawn from the registry, no add or delete."""

    #: The ``CHANNEL_LAYERS`` alias whose registry the pages show.
    layer_alias = "default"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Model:
        """An unsaved instance naming the room or node (there is no table to read)."""
        return self.model(pk=object_id)

    def wrap(self, view: View) -> View:
        """``view`` as an admin page: staff only, CSRF-protected, given this ModelAdmin."""

        def page(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            request.current_app = self.admin_site.name
            return view(request, self, *args, **kwargs)

        return self.admin_site.admin_view(update_wrapper(page, view))

    def url_name(self, view: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{view}"


@admin.register(Room)
class RoomAdmin(RegistryAdmin):
    list_per_page = 50

    def get_urls(self) -> list[URLPattern]:
        history = self.admin_site.admin_view(self.history_view)
        return [
            path("", self.wrap(admin_views.room_list), name=self.url_name("changelist")),
            path("<str:object_id>/history/", history, name=self.url_name("history")),
            path("<str:object_id>/remove/", self.wrap(admin_views.remove_member),
                 name=self.url_name("remove")),
            path("<str:object_id>/disconnect/", self.wrap(admin_views.disconnect_member),
                 name=self.url_name("disconnect")),
            # "change" is the name LogEntry.get_admin_url() and the history page link to.
            path("<str:object_id>/", self.wrap(admin_views.room_detail),
                 name=self.url_name("change")),
        ]  # fmt: skip


@admin.register(Node)
class NodeAdmin(RegistryAdmin):
    def get_urls(self) -> list[URLPattern]:
        return [
            path("", self.wrap(admin_views.node_list), name=self.url_name("changelist")),
            path("<str:object_id>/", self.wrap(admin_views.node_detail),
                 name=self.url_name("change")),
        ]  # fmt: skip
