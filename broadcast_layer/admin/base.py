"""What the Rooms and Nodes admins share: a ModelAdmin over a placeholder model.

The pages are ``ModelAdmin`` methods that :meth:`RegistryAdmin.get_urls` wires in place
of the standard URLs, wrapped by ``admin_site.admin_view`` (staff login, CSRF, no
caching). Redis being unreachable is shown on the page (503).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from ..models import Node, Room
from ..registry import SyncRegistry, get_registry

View = Callable[..., HttpResponse]


def admin_url(request: HttpRequest, model: type[Room | Node], view: str, *args: str) -> str:
    """The URL of one of this app's admin views, e.g. ``admin_url(request, Room, "change", name)``.

    ``args`` are object ids, quoted as the admin quotes them in URLs.
    """
    return reverse(
        f"admin:broadcast_layer_{model._meta.model_name}_{view}",
        args=[quote(arg) for arg in args],
        current_app=getattr(request, "current_app", None),
    )


def require(allowed: bool) -> None:
    """Raise ``PermissionDenied`` (403) unless ``allowed``."""
    if not allowed:
        raise PermissionDenied


def count(number: int, noun: str) -> str:
    """``"1 room"``, ``"2 rooms"``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


class RegistryAdmin(admin.ModelAdmin):
    """An admin for a placeholder model: pages drawn from the registry, no add or delete.

    Permissions are the model's own (``view_room`` to see rooms, ``change_room`` to act
    on them, ``view_node`` to see nodes); see docs/admin.md.
    """

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
        """``view`` (a method of this admin) as an admin page: staff only, CSRF-protected."""

        def page(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            request.current_app = self.admin_site.name
            return view(request, *args, **kwargs)

        return self.admin_site.admin_view(update_wrapper(page, view))

    def url_name(self, view: str) -> str:
        """The URL name of one of this admin's pages, as ``admin:<name>`` reverses it."""
        return f"{self.opts.app_label}_{self.opts.model_name}_{view}"

    @property
    def registry(self) -> SyncRegistry:
        """The synchronous registry of :attr:`layer_alias` (shared, built once per process)."""
        return get_registry(self.layer_alias)

    def render(self, request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
        """Render inside the admin; a ``redis_error`` in the context makes it a 503."""
        context = {**self.admin_site.each_context(request), "opts": self.opts, **context}
        status = 503 if context.get("redis_error") else 200
        return TemplateResponse(
            request, f"admin/broadcast_layer/{template}", context, status=status
        )
