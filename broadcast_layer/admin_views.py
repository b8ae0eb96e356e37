"""The admin pages: rooms, a room, nodes, a node; thin over the registry and the actions.

Every view takes the :class:`~broadcast_layer.admin.RegistryAdmin` that routes to it
(for permissions, the layer alias, URLs and ``log_change``). The admin site's
``admin_view`` wrapper has already sent anonymous and non-staff users to the login
page and applied CSRF protection. Redis being unreachable is shown on the page (503).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from . import admin_actions
from .admin_forms import MemberForm, RoomQuery, SendMessageForm
from .exceptions import MessageTooLarge, RedisUnavailable
from .models import Node, Room
from .registry import ChannelInfo, Member, RoomPage, SyncRegistry, get_registry
from .validation import is_valid_group_name

if TYPE_CHECKING:
    from .admin import RegistryAdmin

#: A room page lists at most this many members (the registry returns them all).
MEMBERS_SHOWN = 1000
#: To fill one page of search results, ask the registry at most this many times; each
#: call examines up to ``registry.SCAN_BUDGET`` (20 000) room names.
SEARCH_CALLS = 5
_SHOWN_KEYS = ("name", "user", "user_id", "node")


@dataclass(frozen=True)
class MemberRow:
    """A member as the room page shows it: the metadata keys people read, then the rest."""

    channel: str
    name: str
    user: str
    node_label: str  # the "node" metadata a consumer attached, else the node id
    node_hint: str  # the node id, when the label is a name
    node_url: str
    joined: datetime
    other: str  # the remaining metadata as JSON


def admin_url(request: HttpRequest, model: type[Room | Node], view: str, *args: str) -> str:
    """The URL of one of this app's admin views, e.g. ``admin_url(request, Room, "change", name)``.

    ``args`` are object ids, quoted as the admin quotes them in URLs.
    """
    return reverse(
        f"admin:broadcast_layer_{model._meta.model_name}_{view}",
        args=[quote(arg) for arg in args],
        current_app=getattr(request, "current_app", None),
    )


def _registry(model_admin: RegistryAdmin) -> SyncRegistry:
    return get_registry(model_admin.layer_alias)


def _render(
    request: HttpRequest, model_admin: RegistryAdmin, template: str, context: dict[str, Any]
) -> TemplateResponse:
    """Render inside the admin; a ``redis_error`` in the context makes it a 503."""
    context = {**model_admin.admin_site.each_context(request), "opts": model_admin.opts, **context}
    status = 503 if context.get("redis_error") else 200
    return TemplateResponse(request, f"admin/broadcast_layer/{template}", context, status=status)


def _require(allowed: bool) -> None:
    if not allowed:
        raise PermissionDenied


def _room_name(object_id: str) -> str:
    name = unquote(object_id)
    if not is_valid_group_name(name):
        raise Http404(f"{name!r:.60} is not a valid room name")
    return name


# -- rooms -----------------------------------------------------------------------------


def room_list(request: HttpRequest, model_admin: RegistryAdmin) -> HttpResponse:
    """One page of rooms, searched by glob and sorted by name or size, from the index."""
    _require(model_admin.has_view_permission(request))
    query = RoomQuery.from_get(request.GET)
    per_page = model_admin.list_per_page
    context: dict[str, Any] = {"title": "Rooms", "query": query}
    if query.pattern_error:  # refused before anything goes to Redis
        context["pattern_error"] = query.pattern_error
        return _render(request, model_admin, "room_list.html", context)
    try:
        page = _find_rooms(_registry(model_admin), query, per_page)
    except RedisUnavailable as exc:
        return _render(request, model_admin, "room_list.html", {**context, "redis_error": exc})
    rows = [(room, admin_url(request, Room, "change", room.name)) for room in page.rooms]
    context |= {
        "page": page,
        "rows": rows,
        "summary": _rooms_summary(query, page),
        "empty_text": _no_rooms_text(query, page),
        "sort_by_name": query.url(order="name", offset=0),
        "sort_by_size": query.url(order="size", offset=0),
        "first_url": query.url(offset=0) if query.offset else None,
        # With a pattern an offset is a position in the index, not a count of matches,
        # so only the unfiltered list can step back one page.
        "previous_url": (
            query.url(offset=max(0, query.offset - per_page))
            if query.offset and not query.pattern
            else None
        ),
        "next_url": query.url(offset=page.next_offset) if page.next_offset is not None else None,
    }
    return _render(request, model_admin, "room_list.html", context)


def _find_rooms(registry: SyncRegistry, query: RoomQuery, per_page: int) -> RoomPage:
    """One page of rooms; a search goes on through the index until the page is full."""
    page = registry.rooms(query.pattern, query.order, query.offset, per_page)
    rooms = list(page.rooms)
    for _ in range(SEARCH_CALLS - 1):
        if not query.pattern or len(rooms) >= per_page or page.next_offset is None:
            break
        page = registry.rooms(query.pattern, query.order, page.next_offset, per_page - len(rooms))
        rooms += page.rooms
    return RoomPage(tuple(rooms), page.total, page.next_offset)


def _no_rooms_text(query: RoomQuery, page: RoomPage) -> str:
    if not query.pattern:
        return "No rooms: no channel is in a group."
    if page.next_offset is None:
        return f"No room matching {query.pattern}."
    return f"No room matching {query.pattern} so far; the next page searches further."


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _rooms_summary(query: RoomQuery, page: RoomPage) -> str:
    total = _count(page.total, "room")
    if query.pattern:
        return f"{_count(len(page.rooms), 'matching room')} here, of {total} in all"
    if not page.rooms:
        return total
    return f"Rooms {query.offset + 1} to {query.offset + len(page.rooms)} of {page.total}"


def _member_row(request: HttpRequest, member: Member) -> MemberRow:
    meta = member.metadata
    other = {key: value for key, value in meta.items() if key not in _SHOWN_KEYS}
    node_id = member.node or ""
    label = str(meta.get("node") or node_id or "normal channel")
    return MemberRow(
        channel=member.channel,
        name=str(meta.get("name", "")),
        user=str(meta.get("user", meta.get("user_id", ""))),
        node_label=label,
        node_hint=node_id if label != node_id else "",
        node_url=admin_url(request, Node, "change", node_id) if node_id else "",
        joined=member.joined,
        other=json.dumps(other, sort_keys=True) if other else "",
    )


def room_detail(request: HttpRequest, model_admin: RegistryAdmin, object_id: str) -> HttpResponse:
    """A room's members; POST sends the message in the form to the room."""
    name = _room_name(object_id)
    _require(model_admin.has_view_permission(request))
    if request.method != "POST":
        return _room_page(request, model_admin, name, SendMessageForm())
    _require(model_admin.has_change_permission(request))
    form = SendMessageForm(request.POST)
    if form.is_valid():
        try:
            return _send(request, model_admin, name, form)
        except RedisUnavailable as exc:
            return _room_page(request, model_admin, name, form, redis_error=exc)
        except (TypeError, ValueError, MessageTooLarge) as exc:  # refused by the layer
            form.add_error(None, str(exc))
    return _room_page(request, model_admin, name, form)


def _room_page(
    request: HttpRequest,
    model_admin: RegistryAdmin,
    name: str,
    form: SendMessageForm,
    redis_error: Exception | None = None,
) -> TemplateResponse:
    context: dict[str, Any] = {
        "title": name,
        "room": Room(name=name),
        "form": form,
        "can_change": model_admin.has_change_permission(request),
        "history_url": admin_url(request, Room, "history", name),
        "remove_url": admin_url(request, Room, "remove", name),
        "disconnect_url": admin_url(request, Room, "disconnect", name),
        "redis_error": redis_error,
    }
    if redis_error is None:
        size = nodes = 0
        try:
            registry = _registry(model_admin)
            members = registry.members(name, limit=MEMBERS_SHOWN)
            counts = registry.room(name)  # O(1), never loads every member
            size, nodes = counts.size, counts.nodes
        except RedisUnavailable as exc:
            members, context["redis_error"] = [], exc
        context |= {
            "members": [_member_row(request, member) for member in members],
            "hidden": max(0, size - len(members)),
            "summary": f"{_count(size, 'member')} on {_count(nodes, 'node')}",
        }
    return _render(request, model_admin, "room_detail.html", context)


def _send(
    request: HttpRequest, model_admin: RegistryAdmin, name: str, form: SendMessageForm
) -> HttpResponse:
    message = form.message()
    result = admin_actions.send(model_admin.layer_alias, name, message)
    model_admin.log_change(
        request, Room(name=name),
        f"Sent a {message['type']} message to {_count(result.members, 'member')} "
        f"on {_count(result.nodes, 'node')}.",
    )  # fmt: skip
    messages.success(request, f"Message sent. {result}.")
    return HttpResponseRedirect(request.path)


def _member_action(
    request: HttpRequest, model_admin: RegistryAdmin, object_id: str
) -> tuple[str, str | None]:
    """The room and the posted channel (None, with an error message, when invalid)."""
    name = _room_name(object_id)
    _require(model_admin.has_change_permission(request))
    form = MemberForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Invalid channel: {' '.join(form.errors['channel'])}")
        return name, None
    return name, form.cleaned_data["channel"]


@require_POST
def remove_member(request: HttpRequest, model_admin: RegistryAdmin, object_id: str) -> HttpResponse:
    """Take a member out of the room (group_discard), wherever its node is."""
    name, channel = _member_action(request, model_admin, object_id)
    if channel is not None:
        try:
            admin_actions.remove(model_admin.layer_alias, name, channel)
        except RedisUnavailable as exc:
            messages.error(request, f"Could not remove {channel}: {exc}")
        else:
            model_admin.log_change(request, Room(name=name), f"Removed {channel} from the room.")
            messages.success(request, f"Removed {channel} from {name}.")
    return HttpResponseRedirect(admin_url(request, Room, "change", name))


@require_POST
def disconnect_member(
    request: HttpRequest, model_admin: RegistryAdmin, object_id: str
) -> HttpResponse:
    """Ask a member's node to close its connection (layer.disconnect)."""
    name, channel = _member_action(request, model_admin, object_id)
    if channel is not None:
        try:
            delivered = admin_actions.disconnect(model_admin.layer_alias, channel)
        except (ValueError, RedisUnavailable) as exc:
            messages.error(request, f"Could not disconnect {channel}: {exc}")
        else:
            if delivered:
                model_admin.log_change(request, Room(name=name), f"Disconnected {channel}.")
                messages.success(request, f"Asked {channel}'s node to disconnect it.")
            else:
                messages.warning(request, f"{channel}'s node is not running; nothing to do.")
    return HttpResponseRedirect(admin_url(request, Room, "change", name))


# -- nodes -----------------------------------------------------------------------------


def node_list(request: HttpRequest, model_admin: RegistryAdmin) -> HttpResponse:
    """The live nodes, oldest first, with their heartbeat age and channel count."""
    _require(model_admin.has_view_permission(request))
    context: dict[str, Any] = {"title": "Nodes"}
    try:
        nodes = _registry(model_admin).nodes()
    except RedisUnavailable as exc:
        return _render(request, model_admin, "node_list.html", {**context, "redis_error": exc})
    now = timezone.now()
    context["rows"] = [
        (node, admin_url(request, Node, "change", node.id),
         max(0.0, (now - node.heartbeat).total_seconds()))
        for node in nodes
    ]  # fmt: skip
    return _render(request, model_admin, "node_list.html", context)


def _channel_row(
    request: HttpRequest, info: ChannelInfo
) -> tuple[ChannelInfo, list[tuple[str, datetime, str]], str]:
    groups = [
        (group, joined, admin_url(request, Room, "change", group))
        for group, joined in sorted(info.groups.items())
    ]
    return info, groups, json.dumps(info.metadata, sort_keys=True) if info.metadata else ""


def node_detail(request: HttpRequest, model_admin: RegistryAdmin, object_id: str) -> HttpResponse:
    """One node's channels with their groups and metadata, as its records hold them."""
    node_id = unquote(object_id)
    _require(model_admin.has_view_permission(request))
    context: dict[str, Any] = {"title": f"Node {node_id}", "node_id": node_id}
    registry = _registry(model_admin)
    try:
        node = next((node for node in registry.nodes() if node.id == node_id), None)
        channels = registry.node_channels(node_id)
    except RedisUnavailable as exc:
        return _render(request, model_admin, "node_detail.html", {**context, "redis_error": exc})
    context |= {"node": node, "rows": [_channel_row(request, info) for info in channels]}
    return _render(request, model_admin, "node_detail.html", context)
