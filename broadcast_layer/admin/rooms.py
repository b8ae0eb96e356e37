"""The Rooms admin: the rooms list, a room's members, sending to it, removing a member.

Thin over the registry and :mod:`.actions`. The admin site's ``admin_view`` wrapper
has already sent anonymous and non-staff users to the login page and applied CSRF
protection before a page method runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from .._protocol.validation import is_valid_group_name
from ..exceptions import MessageTooLarge, RedisUnavailable
from ..layer import HistoryPage, get_layer
from ..models import Node, Room
from ..registry import Member, RoomPage, SyncRegistry
from . import actions
from .base import RegistryAdmin, admin_url, count, require
from .forms import MemberForm, RoomQuery, SendMessageForm

#: A room page lists at most this many members (the registry returns them all).
MEMBERS_SHOWN = 1000
#: A history group's page shows its last this many messages, newest first.
MESSAGES_SHOWN = 20
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


class RoomAdmin(RegistryAdmin):
    """Rooms: ``view_room`` to see them, ``change_room`` to send, remove and disconnect."""

    list_per_page = 50

    def get_urls(self) -> list[URLPattern]:
        history = self.admin_site.admin_view(self.history_view)
        return [
            path("", self.wrap(self.changelist_view), name=self.url_name("changelist")),
            path("<str:object_id>/history/", history, name=self.url_name("history")),
            path("<str:object_id>/remove/", self.wrap(self.remove_view),
                 name=self.url_name("remove")),
            path("<str:object_id>/disconnect/", self.wrap(self.disconnect_view),
                 name=self.url_name("disconnect")),
            # "change" is the name LogEntry.get_admin_url() and the history page link to.
            path("<str:object_id>/", self.wrap(self.change_view), name=self.url_name("change")),
        ]  # fmt: skip

    # -- the rooms list ----------------------------------------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """One page of rooms, searched by glob and sorted by name or size, from the index."""
        require(self.has_view_permission(request))
        query = RoomQuery.from_get(request.GET)
        per_page = self.list_per_page
        context: dict[str, Any] = {"title": "Rooms", "query": query}
        if query.pattern_error:  # refused before anything goes to Redis
            context["pattern_error"] = query.pattern_error
            return self.render(request, "room_list.html", context)
        try:
            page = _find_rooms(self.registry, query, per_page)
        except RedisUnavailable as exc:
            return self.render(request, "room_list.html", {**context, "redis_error": exc})
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
            "next_url": (
                query.url(offset=page.next_offset) if page.next_offset is not None else None
            ),
        }
        return self.render(request, "room_list.html", context)

    # -- a room ------------------------------------------------------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """A room's members; POST sends the message in the form to the room."""
        name = _room_name(object_id)
        require(self.has_view_permission(request))
        if request.method != "POST":
            return self._room_page(request, name, SendMessageForm())
        require(self.has_change_permission(request))
        form = SendMessageForm(request.POST)
        if form.is_valid():
            try:
                return self._send(request, name, form)
            except RedisUnavailable as exc:
                return self._room_page(request, name, form, redis_error=exc)
            except (TypeError, ValueError, MessageTooLarge) as exc:  # refused by the layer
                form.add_error(None, str(exc))
        return self._room_page(request, name, form)

    def _room_page(
        self,
        request: HttpRequest,
        name: str,
        form: SendMessageForm,
        redis_error: Exception | None = None,
    ) -> HttpResponse:
        context: dict[str, Any] = {
            "title": name,
            "room": Room(name=name),
            "form": form,
            "can_change": self.has_change_permission(request),
            "history_url": admin_url(request, Room, "history", name),
            "remove_url": admin_url(request, Room, "remove", name),
            "disconnect_url": admin_url(request, Room, "disconnect", name),
            "redis_error": redis_error,
        }
        if redis_error is None:
            size = nodes = 0
            try:
                registry = self.registry
                members = registry.members(name, limit=MEMBERS_SHOWN)
                counts = registry.room(name)  # O(1), never loads every member
                size, nodes = counts.size, counts.nodes
            except RedisUnavailable as exc:
                members, context["redis_error"] = [], exc
            context |= self._kept_messages(name)
            context |= {
                "members": [_member_row(request, member) for member in members],
                "hidden": max(0, size - len(members)),
                "summary": f"{count(size, 'member')} on {count(nodes, 'node')}",
            }
        return self.render(request, "room_detail.html", context)

    def _kept_messages(self, name: str) -> dict[str, Any]:
        """The last messages of a history group (CONFIG["history"]), for the room page."""
        layer = get_layer(self.layer_alias)
        if layer.config.history_for(name) is None:
            return {}
        try:
            page: HistoryPage = layer.sync_group_history(name, limit=MESSAGES_SHOWN)
        except RedisUnavailable:
            return {}
        rows = [(item.offset, _kept_text(item.message)) for item in reversed(page.messages)]
        return {"kept": rows, "kept_epoch": page.epoch, "kept_top": page.top}

    def _send(self, request: HttpRequest, name: str, form: SendMessageForm) -> HttpResponse:
        message = form.message()
        result = actions.send(self.layer_alias, name, message)
        self.log_change(
            request, Room(name=name),
            f"Sent a {message['type']} message to {count(result.members, 'member')} "
            f"on {count(result.nodes, 'node')}.",
        )  # fmt: skip
        messages.success(request, f"Message sent. {result}.")
        return HttpResponseRedirect(request.path)

    # -- a member ----------------------------------------------------------------------

    @method_decorator(require_POST)
    def remove_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Take a member out of the room (group_discard), wherever its node is."""
        name, channel = self._member_action(request, object_id)
        if channel is not None:
            try:
                actions.remove(self.layer_alias, name, channel)
            except RedisUnavailable as exc:
                messages.error(request, f"Could not remove {channel}: {exc}")
            else:
                self.log_change(request, Room(name=name), f"Removed {channel} from the room.")
                messages.success(request, f"Removed {channel} from {name}.")
        return HttpResponseRedirect(admin_url(request, Room, "change", name))

    @method_decorator(require_POST)
    def disconnect_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Ask a member's node to close its connection (layer.disconnect)."""
        name, channel = self._member_action(request, object_id)
        if channel is not None:
            try:
                delivered = actions.disconnect(self.layer_alias, channel)
            except (ValueError, RedisUnavailable) as exc:
                messages.error(request, f"Could not disconnect {channel}: {exc}")
            else:
                if delivered:
                    self.log_change(request, Room(name=name), f"Disconnected {channel}.")
                    messages.success(request, f"Asked {channel}'s node to disconnect it.")
                else:
                    messages.warning(request, f"{channel}'s node is not running; nothing to do.")
        return HttpResponseRedirect(admin_url(request, Room, "change", name))

    def _member_action(self, request: HttpRequest, object_id: str) -> tuple[str, str | None]:
        """The room and the posted channel (None, with an error message, when invalid)."""
        name = _room_name(object_id)
        require(self.has_change_permission(request))
        form = MemberForm(request.POST)
        if not form.is_valid():
            messages.error(request, f"Invalid channel: {' '.join(form.errors['channel'])}")
            return name, None
        return name, form.cleaned_data["channel"]


def _kept_text(message: dict[str, Any]) -> str:
    """A kept message on one line: its JSON without the history stamp, cut at 300."""
    body = {key: value for key, value in message.items() if key != "history"}
    return json.dumps(body, default=repr)[:300]


def _room_name(object_id: str) -> str:
    name = unquote(object_id)
    if not is_valid_group_name(name):
        raise Http404(f"{name!r:.60} is not a valid room name")
    return name


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


def _rooms_summary(query: RoomQuery, page: RoomPage) -> str:
    total = count(page.total, "room")
    if query.pattern:
        return f"{count(len(page.rooms), 'matching room')} here, of {total} in all"
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
