"""The two chat pages: pick a room, and the room itself."""

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from .rooms import is_valid_room_name


def index(request: HttpRequest) -> HttpResponse:
    """The room picker; ``?room=<name>`` redirects to that room."""
    room_name = request.GET.get("room", "").strip()
    if room_name and is_valid_room_name(room_name):
        return redirect("chat:room", room_name=room_name)
    error = "Use letters, digits, '-', '_' or '.', at most 80 characters." if room_name else ""
    return render(request, "chat/index.html", {"error": error, "room_name": room_name})


def room(request: HttpRequest, room_name: str) -> HttpResponse:
    if not is_valid_room_name(room_name):
        raise Http404("No such room")
    return render(request, "chat/room.html", {"room_name": room_name})
