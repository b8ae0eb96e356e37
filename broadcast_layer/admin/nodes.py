"""The Nodes admin: the live nodes, and one node's channels with their groups."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.contrib.admin.utils import unquote
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils import timezone

from ..exceptions import RedisUnavailable
from ..models import Node, Room
from ..registry import ChannelInfo
from .base import RegistryAdmin, admin_url, require


class NodeAdmin(RegistryAdmin):
    """Nodes, read only: ``view_node`` to see them."""

    def get_urls(self) -> list[URLPattern]:
        return [
            path("", self.wrap(self.changelist_view), name=self.url_name("changelist")),
            path("<str:object_id>/", self.wrap(self.change_view), name=self.url_name("change")),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The live nodes, oldest first, with their heartbeat age and channel count."""
        require(self.has_view_permission(request))
        context: dict[str, Any] = {"title": "Nodes"}
        try:
            nodes = self.registry.nodes()
        except RedisUnavailable as exc:
            return self.render(request, "node_list.html", {**context, "redis_error": exc})
        now = timezone.now()
        context["rows"] = [
            (node, admin_url(request, Node, "change", node.id),
             max(0.0, (now - node.heartbeat).total_seconds()))
            for node in nodes
        ]  # fmt: skip
        return self.render(request, "node_list.html", context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """One node's channels with their groups and metadata, as its records hold them."""
        node_id = unquote(object_id)
        require(self.has_view_permission(request))
        context: dict[str, Any] = {"title": f"Node {node_id}", "node_id": node_id}
        registry = self.registry
        try:
            node = next((node for node in registry.nodes() if node.id == node_id), None)
            channels = registry.node_channels(node_id)
        except RedisUnavailable as exc:
            return self.render(request, "node_detail.html", {**context, "redis_error": exc})
        context |= {"node": node, "rows": [_channel_row(request, info) for info in channels]}
        return self.render(request, "node_detail.html", context)


def _channel_row(
    request: HttpRequest, info: ChannelInfo
) -> tuple[ChannelInfo, list[tuple[str, datetime, str]], str]:
    groups = [
        (group, joined, admin_url(request, Room, "change", group))
        for group, joined in sorted(info.groups.items())
    ]
    return info, groups, json.dumps(info.metadata, sort_keys=True) if info.metadata else ""
