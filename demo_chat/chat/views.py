"""The chat pages: pick a name and a room (with live member counts), and the room itself."""

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from broadcast_layer import RedisUnavailable
from broadcast_layer.registry import get_registry

from .rooms import (
    ROOM_GROUP_PREFIX,
    SESSION_NAME_KEY,
    clean_display_name,
    is_valid_room_name,
    room_of_group,
)

ROOM_ERROR = "Use letters, digits, '-' or '_', at most 80 characters."
ROOMS_LISTED = 50


def index(request: HttpRequest) -> HttpResponse:
    """The room picker; ``?room=<name>`` redirects to that room."""
    room_name = request.GET.get("room", "").strip()
    if room_name and is_valid_room_name(room_name):
        return redirect("chat:room", room_name=room_name)
    return render(request, "chat/index.html", {
        "error": ROOM_ERROR if room_name else "",
        "room_name": room_name,
        "display_name": request.session.get(SESSION_NAME_KEY, ""),
    })  # fmt: skip


@require_POST
def set_name(request: HttpRequest) -> HttpResponse:
    """Remember the display name in the session (CSRF-protected form), cleaned."""
    name = clean_display_name(request.POST.get("name"))
    if name:
        request.session[SESSION_NAME_KEY] = name
    return redirect("chat:index")


def rooms_json(request: HttpRequest) -> JsonResponse:
    """The busiest chat rooms with live member counts, straight from the registry.

    Only groups of the chat's namespace are listed: internal groups (``broadcast.all``,
    ``user.<id>``) and any other group of the site never appear.
    """
    try:
        page = get_registry().rooms(pattern=f"{ROOM_GROUP_PREFIX}*", order="size",
                                    limit=ROOMS_LISTED)  # fmt: skip
    except RedisUnavailable:
        return JsonResponse({"error": "Redis is unreachable"}, status=503)
    rooms = []
    for room in page.rooms:
        name = room_of_group(room.name)  # the pattern already filters; this is the rule
        if name is not None:
            rooms.append({"name": name, "size": room.size, "nodes": room.nodes})
    return JsonResponse({"rooms": rooms})


def room(request: HttpRequest, room_name: str) -> HttpResponse:
    if not is_valid_room_name(room_name):
        raise Http404("No such room")
    return render(request, "chat/room.html", {"room_name": room_name})
