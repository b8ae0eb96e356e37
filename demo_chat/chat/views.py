"""The chat pages: pick a name and a room (with live member counts), and the room itself."""

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from broadcast_layer import RedisUnavailable
from broadcast_layer.registry import get_registry

from .rooms import SESSION_NAME_KEY, clean_display_name, is_valid_room_name

ROOM_ERROR = "Use letters, digits, '-', '_' or '.', at most 80 characters."


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
    """Remember the display name in the session (CSRF-protected form)."""
    name = clean_display_name(request.POST.get("name"))
    if name:
        request.session[SESSION_NAME_KEY] = name
    return redirect("chat:index")


def rooms_json(request: HttpRequest) -> JsonResponse:
    """The busiest rooms with live member counts, straight from the registry."""
    try:
        page = get_registry().rooms(order="size", limit=50)
    except RedisUnavailable:
        return JsonResponse({"error": "Redis is unreachable"}, status=503)
    rooms = [{"name": room.name, "size": room.size, "nodes": room.nodes} for room in page.rooms
             if is_valid_room_name(room.name)]  # fmt: skip
    return JsonResponse({"rooms": rooms})


def room(request: HttpRequest, room_name: str) -> HttpResponse:
    if not is_valid_room_name(room_name):
        raise Http404("No such room")
    return render(request, "chat/room.html", {"room_name": room_name})
