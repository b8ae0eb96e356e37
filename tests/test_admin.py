"""The admin's Rooms and Nodes pages, through Django's test client against a real Redis.

Members live on layer instances running on the test's event loop, so the client's
requests run in a worker thread (``asyncio.to_thread``): the views' remote calls then
reach nodes that are still serving, as they would in production.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st

from broadcast_layer import registry
from broadcast_layer._protocol.validation import require_valid_message_type
from broadcast_layer.admin import rooms as room_pages
from broadcast_layer.models import Node, Room

from . import faults
from .conftest import nothing_arrives, within

pytestmark = pytest.mark.django_db(transaction=True)  # requests run in another thread

PERMISSIONS = {
    "viewer": ["view_room", "view_node"],
    "operator": ["view_room", "change_room", "view_node"],
    "nobody": [],
}


@pytest.fixture(autouse=True)
def layer_settings(settings, redis_url, prefix):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix, "max_message_size": 100_000},
        },
    }


@pytest.fixture
def login(django_user_model) -> Callable[..., Client]:
    """A client logged in as a new user: staff with one of PERMISSIONS's sets, or not staff."""

    def make(role: str = "operator", staff: bool = True, **client_options: Any) -> Client:
        username = role if staff else f"{role}-not-staff"
        user, _ = django_user_model.objects.get_or_create(username=username, is_staff=staff)
        codenames = PERMISSIONS[role]
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="broadcast_layer", codename__in=codenames
            )
        )
        client = Client(**client_options)
        client.force_login(user)
        return client

    return make


def room_url(room: str, view: str = "change") -> str:
    return reverse(f"admin:broadcast_layer_room_{view}", args=[quote(room)])


def node_url(node_id: str) -> str:
    return reverse("admin:broadcast_layer_node_change", args=[node_id])


ROOMS = reverse("admin:broadcast_layer_room_changelist")
NODES = reverse("admin:broadcast_layer_node_changelist")


async def get(client: Client, url: str, **params: Any) -> Any:
    return await asyncio.to_thread(client.get, url, params)


async def post(client: Client, url: str, data: dict[str, Any], **options: Any) -> Any:
    return await asyncio.to_thread(client.post, url, data, **options)


def text(response: Any) -> str:
    return response.content.decode()


def shown_messages(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def room_names(response: Any) -> list[str]:
    return [room.name for room, _ in response.context["rows"]]


def history() -> list[tuple[str, str, str, int]]:
    """Every LogEntry as (username, object id, change message, action flag)."""
    return [
        (entry.user.username, entry.object_id, entry.get_change_message(), entry.action_flag)
        for entry in LogEntry.objects.select_related("user").order_by("pk")
    ]


async def member_of(layer, room: str, **metadata: Any) -> str:
    channel = await layer.new_channel()
    if metadata:
        await layer.set_channel_metadata(channel, metadata)
    await layer.group_add(room, channel)
    return channel


# -- the admin index and permissions ------------------------------------------------------


def test_rooms_and_nodes_are_under_the_app_on_the_admin_index(login):
    page = text(login("viewer").get(reverse("admin:index")))
    assert "Broadcast layer" in page
    assert f'<a href="{ROOMS}">Rooms</a>' in page
    assert f'<a href="{NODES}">Nodes</a>' in page
    assert "addlink" not in page  # rooms and nodes cannot be added
    assert "Broadcast layer" not in text(login("nobody").get(reverse("admin:index")))


@pytest.mark.parametrize("model", [Room, Node])
def test_every_page_is_a_method_of_the_registered_model_admin(model):
    """Django's pattern: get_urls() wires the ModelAdmin's own methods, no free functions."""
    model_admin = admin.site._registry[model]
    for pattern in model_admin.get_urls():
        view = pattern.callback
        while not inspect.ismethod(view):
            view = view.__wrapped__
        assert view.__self__ is model_admin, pattern.name


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", ROOMS),
        ("get", room_url("lobby")),
        ("get", room_url("lobby", "history")),
        ("get", NODES),
        ("get", node_url("0123456789abcdef")),
        ("post", room_url("lobby")),
        ("post", room_url("lobby", "remove")),
        ("post", room_url("lobby", "disconnect")),
    ],
)
def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(login, method, url):
    for client in (Client(), login("operator", staff=False)):
        data = {"channel": "specific.a!b", "text": "hi"} if method == "post" else {}
        response = getattr(client, method)(url, data)
        assert response.status_code == 302
        assert response.url == f"{reverse('admin:login')}?next={url}"


def test_staff_without_the_apps_permissions_is_refused(login):
    client = login("nobody")
    for url in (ROOMS, room_url("lobby"), NODES, node_url("0123456789abcdef")):
        assert client.get(url).status_code == 403
    assert client.post(room_url("lobby"), {"type": "t", "text": "hi"}).status_code == 403


async def test_view_permission_shows_pages_but_every_action_needs_change(login, layer):
    channel = await member_of(layer, "lobby")
    client = await asyncio.to_thread(login, "viewer")
    page = await get(client, room_url("lobby"))
    assert page.status_code == 200
    assert channel in text(page)
    assert 'id="send-form"' not in text(page)
    assert "Disconnect" not in text(page)
    assert (await post(client, room_url("lobby"), {"type": "t", "text": "hi"})).status_code == 403
    for action in ("remove", "disconnect"):
        response = await post(client, room_url("lobby", action), {"channel": channel})
        assert response.status_code == 403
    await nothing_arrives(layer, channel)
    assert [m.channel for m in await layer.registry.members("lobby")] == [channel]
    assert await asyncio.to_thread(history) == []


def test_get_is_not_an_action(login):
    client = login("operator")
    assert client.get(room_url("lobby", "remove")).status_code == 405
    assert client.get(room_url("lobby", "disconnect")).status_code == 405


def test_every_form_needs_the_csrf_token(login):
    client = login("operator", enforce_csrf_checks=True)
    for url in (room_url("lobby"), room_url("lobby", "remove"), room_url("lobby", "disconnect")):
        assert client.post(url, {"type": "t", "text": "x", "channel": "c"}).status_code == 403
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"',
                      text(client.get(room_url("lobby"))))  # fmt: skip
    assert token is not None
    response = client.post(room_url("lobby"), {"type": "t", "text": "x",
                                               "csrfmiddlewaretoken": token[1]})  # fmt: skip
    assert response.status_code == 302


def test_an_invalid_room_name_is_not_found(login):
    assert login("viewer").get(room_url("bad name!")).status_code == 404


# -- the rooms list ------------------------------------------------------------------------


async def walk(client: Client, url: str) -> list[list[str]]:
    """Follow the rooms list's "Next page" links; the room names on each page."""
    pages = []
    while True:
        page = await get(client, url)
        assert page.status_code == 200
        pages.append(room_names(page))
        if page.context["next_url"] is None:
            return pages
        url = ROOMS + page.context["next_url"]


async def test_a_search_goes_on_through_the_index_to_fill_its_pages(login, layer, monkeypatch):
    channel = await layer.new_channel()
    rooms = [f"room-{i:04d}" for i in range(1000)]
    for start in range(0, len(rooms), 50):
        await asyncio.gather(
            *(layer.group_add(room, channel) for room in rooms[start : start + 50])
        )
    client = await asyncio.to_thread(login, "viewer")
    monkeypatch.setattr(registry, "SCAN_BUDGET", 200)  # 5 calls: a page examines 1000 names
    matches = rooms[900:]
    # No literal start, so the search reads the index from its beginning.
    assert await walk(client, ROOMS + "?q=*-09*") == [matches[:50], matches[50:]]
    monkeypatch.setattr(room_pages, "SEARCH_CALLS", 1)
    pages = await walk(client, ROOMS + "?q=*-09*")
    assert pages[0] == []
    assert [name for page in pages for name in page] == matches
    first = await get(client, ROOMS, q="*-09*")
    assert "No room matching *-09* so far; the next page searches further." in text(first)
    # With a literal start, the search begins where that start sorts in the index.
    assert await walk(client, ROOMS + "?q=room-09*") == [matches[:50], matches[50:]]


async def test_rooms_list_pages_through_1500_rooms_by_name_and_by_size(login, layer):
    channel = await layer.new_channel()
    rooms = [f"room-{i:04d}" for i in range(1500)]
    for start in range(0, len(rooms), 50):  # concurrent, within the connection pool's limit
        await asyncio.gather(
            *(layer.group_add(room, channel) for room in rooms[start : start + 50])
        )
    extra = await layer.new_channel()
    for room in ("room-0007", "room-1234"):  # two rooms of two members, one of three
        await layer.group_add(room, extra)
    await layer.group_add("room-1234", await layer.new_channel())
    client = await asyncio.to_thread(login, "viewer")

    pages = await walk(client, ROOMS)
    assert pages == [rooms[start : start + 50] for start in range(0, 1500, 50)]

    first = await get(client, ROOMS)
    assert "Rooms 1 to 50 of 1500" in text(first)
    assert first.context["previous_url"] is None
    second = await get(client, ROOMS, offset=50)
    assert room_names(second)[0] == "room-0050"
    assert second.context["previous_url"] == "?"
    assert (await get(client, ROOMS, o="size", offset=100)).context[
        "previous_url"
    ] == "?o=size&offset=50"
    by_size = await get(client, ROOMS, o="size")
    assert room_names(by_size)[:2] == ["room-1234", "room-0007"]
    assert [(room.size, room.nodes) for room, _ in by_size.context["rows"][:2]] == [(3, 1), (2, 1)]


async def test_rooms_search_by_glob_or_by_a_word(login, layer):
    channel = await layer.new_channel()
    for room in ("chat.lobby", "chat.help", "support.help", "chatter"):
        await layer.group_add(room, channel)
    client = await asyncio.to_thread(login, "viewer")
    assert room_names(await get(client, ROOMS, q="chat.*")) == ["chat.help", "chat.lobby"]
    assert room_names(await get(client, ROOMS, q="help")) == ["chat.help", "support.help"]
    assert room_names(await get(client, ROOMS, q="chat.[!l]*")) == ["chat.help"]
    nothing = await get(client, ROOMS, q="nope")
    assert room_names(nothing) == []
    assert "No room matching *nope*." in text(nothing)
    # Only the unfiltered list can step back a page: a pattern's offsets are not counts.
    assert (await get(client, ROOMS, q="chat*", offset=1)).context["previous_url"] is None


@pytest.mark.parametrize(
    ("q", "error"),
    [("room[", "never closed"), ("bad name", "can never be in a room name"),
     ("?" * 33, "more than 32 wildcards"), ("x" * 300, "longer than 200")],
)  # fmt: skip
def test_a_malformed_search_is_explained_and_not_sent_to_redis(login, q, error):
    page = login("viewer").get(ROOMS, {"q": q})
    assert page.status_code == 200
    assert error in page.context["pattern_error"]
    assert 'id="pattern-error"' in text(page)
    assert "page" not in page.context  # the registry was not asked


def test_bad_query_values_fall_back_to_the_defaults(login):
    page = login("viewer").get(ROOMS, {"o": "nonsense", "offset": "-3"})
    assert page.status_code == 200
    assert page.context["query"].order == "name"
    assert page.context["query"].offset == 0
    assert login("viewer").get(ROOMS, {"offset": "x"}).status_code == 200
    huge = login("viewer").get(ROOMS, {"offset": "9" * 40, "q": "a*"})
    assert huge.status_code == 200
    assert huge.context["query"].offset == registry.MAX_OFFSET
    assert login("viewer").get(ROOMS, {"offset": "٣"}).status_code == 200  # not an ASCII digit


# -- a room ---------------------------------------------------------------------------------


async def test_room_page_shows_members_with_node_join_time_and_metadata(login, nodes):
    ann = await member_of(nodes[0], "lobby", name="Ann", user_id="7", node="web-1", theme="dark")
    bob = await member_of(nodes[1], "lobby")
    client = await asyncio.to_thread(login, "viewer")
    page = await get(client, room_url("lobby"))
    assert page.status_code == 200
    rows = {row.channel: row for row in page.context["members"]}
    assert rows[ann].name == "Ann"
    assert rows[ann].user == "7"
    assert (rows[ann].node_label, rows[ann].node_hint) == ("web-1", nodes[0].node_id)
    assert rows[ann].node_url == node_url(nodes[0].node_id)
    assert rows[ann].other == '{"theme": "dark"}'
    assert (rows[bob].node_label, rows[bob].name) == (nodes[1].node_id, "")
    assert "2 members on 2 nodes" in text(page)
    assert f'<a href="{ROOMS}">Rooms</a>' in text(page)  # breadcrumbs


async def test_pages_and_actions_work_after_every_connection_was_killed(login, nodes, redis_url):
    channel = await member_of(nodes[0], "lobby")
    client = await asyncio.to_thread(login, "operator")
    assert (await get(client, ROOMS)).status_code == 200
    assert faults.kill_clients(redis_url, "normal") >= 1
    page = await get(client, room_url("lobby"))
    assert [row.channel for row in page.context["members"]] == [channel]
    faults.kill_clients(redis_url, "normal")
    response = await post(client, room_url("lobby"), {"type": "chat.message", "text": "after"})
    assert response.status_code == 302
    assert await within(nodes[0].receive(channel)) == {"type": "chat.message", "text": "after"}
    await nothing_arrives(nodes[0], channel)


async def test_an_empty_room_says_so(login):
    client = await asyncio.to_thread(login, "viewer")
    page = await get(client, room_url("gone"))
    assert page.status_code == 200
    assert "Nobody is in this room now" in text(page)


async def test_send_a_text_message_to_the_room(login, nodes):
    channels = [await member_of(nodes[i], "lobby") for i in (0, 1)]
    client = await asyncio.to_thread(login, "operator")
    response = await post(client, room_url("lobby"), {"type": "chat.message", "text": "hi all"})
    assert response.status_code == 302
    assert response.url == room_url("lobby")
    for i in (0, 1):
        assert await within(nodes[i].receive(channels[i])) == {
            "type": "chat.message",
            "text": "hi all",
        }
    page = await get(client, room_url("lobby"))
    assert shown_messages(page) == ["Message sent. lobby: published to 2 nodes, 2 members."]
    assert await asyncio.to_thread(history) == [
        ("operator", "lobby", "Sent a chat.message message to 2 members on 2 nodes.", CHANGE)
    ]


async def test_send_a_json_body(login, layer):
    channel = await member_of(layer, "lobby")
    client = await asyncio.to_thread(login, "operator")
    body = {"type": "game.move", "x": 1, "path": ["a", "b"]}
    response = await post(client, room_url("lobby"), {"type": "t", "body": json.dumps(body)})
    assert response.status_code == 302
    assert await within(layer.receive(channel)) == body
    await post(client, room_url("lobby"), {"type": "game.reset", "body": '{"hard": true}'})
    assert await within(layer.receive(channel)) == {"type": "game.reset", "hard": True}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"type": "t", "text": ""}, "Give a text or a JSON body."),
        ({"type": "t", "text": "x", "body": "{}"}, "Give a text or a JSON body, not both."),
        ({"type": "t", "body": "{nope"}, "The JSON body is not valid JSON"),
        ({"type": "t", "body": "[1]"}, "The JSON body must be a JSON object"),
        ({"type": "_private", "text": "x"}, "starting with a letter"),
        ({"type": "", "text": "x"}, "This field is required."),
        ({"type": "t", "text": "x" * 200_000}, "max_message_size"),
        ({"type": "bad!type", "text": "x"}, "is not a handler name"),
        ({"type": "chat.message\n", "text": "x"}, "is not a handler name"),
        ({"type": "websocket.receive", "text": "x"}, "is an ASGI protocol type"),
        ({"type": "t", "body": '{"type": "http.request"}'}, "is an ASGI protocol type"),
        ({"type": "t", "body": '{"type": 5}'}, "must be a string"),
        ({"type": "t", "body": "[" * 5000 + "]" * 5000}, "nests containers more than 32 deep"),
        ({"type": "t", "body": '{"x": ' + "[" * 40 + "]" * 40 + "}"}, "more than 32 deep"),
    ],
)
async def test_bad_messages_are_refused_in_the_form_and_nothing_is_sent(login, layer, data, error):
    channel = await member_of(layer, "lobby")
    client = await asyncio.to_thread(login, "operator")
    response = await post(client, room_url("lobby"), data)
    assert response.status_code == 200
    assert error in text(response)
    assert channel in text(response)  # the members are still listed
    await nothing_arrives(layer, channel)
    assert await asyncio.to_thread(history) == []


async def test_remove_a_member_held_by_another_node(login, nodes):
    stays = await member_of(nodes[0], "lobby")
    leaves = await member_of(nodes[1], "lobby")
    client = await asyncio.to_thread(login, "operator")
    response = await post(client, room_url("lobby", "remove"), {"channel": leaves})
    assert response.status_code == 302
    assert [m.channel for m in await nodes[0].registry.members("lobby")] == [stays]
    assert nodes[1].local_members("lobby") == frozenset()
    page = await get(client, room_url("lobby"))
    assert shown_messages(page) == [f"Removed {leaves} from lobby."]
    assert [row.channel for row in page.context["members"]] == [stays]
    assert await asyncio.to_thread(history) == [
        ("operator", "lobby", f"Removed {leaves} from the room.", CHANGE)
    ]


async def test_disconnect_a_member_on_another_node(login, nodes):
    channel = await member_of(nodes[1], "lobby")
    client = await asyncio.to_thread(login, "operator")
    response = await post(client, room_url("lobby", "disconnect"), {"channel": channel})
    assert response.status_code == 302
    assert await within(nodes[1].receive(channel)) == {"type": "broadcast.disconnect"}
    page = await get(client, room_url("lobby"))
    assert shown_messages(page) == [f"Asked {channel}'s node to disconnect it."]
    assert await asyncio.to_thread(history) == [
        ("operator", "lobby", f"Disconnected {channel}.", CHANGE)
    ]


async def test_disconnect_of_a_channel_whose_node_is_gone_or_of_a_bad_channel(login, make_layer):
    gone = make_layer()
    channel = await gone.new_channel()
    await gone.close()
    client = await asyncio.to_thread(login, "operator")
    cases = [
        (channel, f"{channel}'s node is not running; nothing to do."),
        ("jobs", "Could not disconnect jobs: 'jobs' is not a process-specific channel"),
        ("bad name", "Invalid channel:"),
        (channel + "\n", "Invalid channel:"),
    ]
    for posted, expected in cases:
        await post(client, room_url("lobby", "disconnect"), {"channel": posted})
        (message,) = shown_messages(await get(client, room_url("lobby")))
        assert message.startswith(expected)
    assert await asyncio.to_thread(history) == []


async def test_actions_are_in_the_rooms_history_and_on_the_index(login, layer):
    channel = await member_of(layer, "lobby")
    client = await asyncio.to_thread(login, "operator")
    await post(client, room_url("lobby"), {"type": "t", "text": "hi"})
    await post(client, room_url("lobby", "remove"), {"channel": channel})
    page = await get(client, room_url("lobby", "history"))
    assert page.status_code == 200
    assert "Sent a t message to 1 member on 1 node." in text(page)
    assert f"Removed {channel} from the room." in text(page)

    def latest_entry() -> tuple[str | None, Any]:
        entry = LogEntry.objects.select_related("content_type").latest("pk")
        return entry.get_admin_url(), entry.content_type.model_class()

    assert await asyncio.to_thread(latest_entry) == (room_url("lobby"), Room)
    assert room_url("lobby") in text(await get(client, reverse("admin:index")))


# -- nodes ----------------------------------------------------------------------------------


async def test_nodes_and_a_nodes_channels(login, nodes):
    await nodes[0].new_channel()
    channel = await member_of(nodes[1], "lobby", name="Ann")
    client = await asyncio.to_thread(login, "viewer")
    page = await get(client, NODES)
    assert page.status_code == 200
    ids = [node.id for node, _, _ in page.context["rows"]]
    assert ids == [nodes[0].node_id, nodes[1].node_id]  # oldest first
    assert all(0 <= age < 15 for _, _, age in page.context["rows"])
    assert node_url(nodes[1].node_id) in text(page)

    page = await get(client, node_url(nodes[1].node_id))
    assert page.status_code == 200
    (row,) = page.context["rows"]
    info, groups, metadata = row
    assert info.channel == channel
    assert [(group, url) for group, _, url in groups] == [("lobby", room_url("lobby"))]
    assert metadata == '{"name": "Ann"}'

    gone = await get(client, node_url("0123456789abcdef"))
    assert gone.status_code == 200
    assert "This node is not live" in text(gone)


# -- Redis unreachable -----------------------------------------------------------------------


def test_redis_unreachable_is_an_error_inside_the_admin_page(settings, login):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
            # A remote action waits subscribe_timeout for its reply channel before failing.
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"], "subscribe_timeout": 0.2},
        },
    }
    client = login("operator")
    pages = [ROOMS, room_url("lobby"), NODES, node_url("0123456789abcdef")]
    for response in [client.get(url) for url in pages] + [
        client.post(room_url("lobby"), {"type": "t", "text": "hi"})
    ]:
        assert response.status_code == 503
        assert 'id="redis-error"' in text(response)
        assert "Redis is unreachable" in text(response)
        assert '<div class="breadcrumbs">' in text(response)  # inside the admin
    for action in ("remove", "disconnect"):
        response = client.post(room_url("lobby", action), {"channel": "specific.a!b"}, follow=True)
        (message,) = shown_messages(response)
        assert message.startswith(f"Could not {action} specific.a!b: Redis")
    assert history() == []


# -- fuzzing the forms ------------------------------------------------------------------------

FUZZ_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\n\t*?[]!{}:"),
    max_size=30,
)
TYPES = st.one_of(
    st.sampled_from(["chat.message", "t", "bad!type", "websocket.receive", "http.x", "_x",
                     "a..b", "chat.message\n", " chat.message", "x" * 101]),
    FUZZ_TEXT,
)  # fmt: skip
BODIES = st.one_of(
    st.sampled_from(["", "{}", '{"n": 1}', "{", "[1]", "null", '{"type": "bad!type"}',
                     '{"type": "websocket.connect"}', '{"type": null}', "[" * 3000 + "]" * 3000,
                     '{"x": ' + "[" * 40 + "]" * 40 + "}", '{"n": 1e999}',
                     '{"n": ' + "9" * 5000 + "}"]),
    FUZZ_TEXT,
)  # fmt: skip
ACTIONS = st.one_of(
    st.fixed_dictionaries({"type": TYPES, "text": FUZZ_TEXT, "body": BODIES}).map(
        lambda data: ("send", "lobby", data)
    ),
    st.tuples(st.sampled_from(["remove", "disconnect"]), st.just("lobby"),
              st.fixed_dictionaries({"channel": FUZZ_TEXT | st.sampled_from(["x!y", "jobs"])})),
    st.tuples(st.just("room"), FUZZ_TEXT, st.just({})),
    st.tuples(st.just("search"), st.just(""),
              st.fixed_dictionaries({"q": FUZZ_TEXT, "o": FUZZ_TEXT, "offset": FUZZ_TEXT})),
)  # fmt: skip


@pytest.fixture
async def fuzz_target(login, layer):
    """A member in "lobby" and a logged-in operator, shared by every generated example."""
    channel = await member_of(layer, "lobby", name="Ann")
    client = await asyncio.to_thread(login, "operator")
    return layer, channel, client


async def snapshot(layer) -> tuple[Any, ...]:
    rooms = await layer.registry.rooms(limit=1000)
    return rooms.rooms, tuple(await layer.registry.members("lobby"))


@given(actions=st.lists(ACTIONS, min_size=1, max_size=4))
async def test_no_generated_form_gets_a_500_or_changes_the_registry(fuzz_target, actions):
    layer, channel, client = fuzz_target
    before = await snapshot(layer)
    accepted = []
    for kind, room, data in actions:
        if kind == "send":
            response = await post(client, room_url(room), data)
            assert response.status_code in (200, 302), data
            if response.status_code == 302:
                accepted.append(data)
        elif kind in ("remove", "disconnect"):
            response = await post(client, room_url(room, kind), data)
            assert response.status_code == 302, data
        elif kind == "room":
            response = await get(client, ROOMS + quote(room) + "/")
            assert response.status_code in (200, 404), room
        else:
            response = await get(client, ROOMS, **data)
            assert response.status_code == 200, data
        assert await snapshot(layer) == before, (kind, data)
    # What the form let through reached the member, with a type a consumer can handle.
    await layer.group_send("lobby", {"type": "end"})
    received = []
    while (message := await within(layer.receive(channel)))["type"] != "end":
        received.append(message)
    assert len(received) == len(accepted)
    for message in received:
        assert require_valid_message_type(message["type"]) == message["type"]


async def test_a_history_rooms_page_shows_its_last_messages(login, settings, make_layer):
    history = {"chat.*": {"size": 100, "ttl": 60}}
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["history"] = history
    layer = make_layer(history=history)
    for n in range(25):
        await layer.group_send("chat.kept", {"type": "chat.message", "text": f"line {n:02d}"})
    client = await asyncio.to_thread(login, "viewer")
    page = text(await get(client, room_url("chat.kept")))
    assert "latest offset 25" in page
    assert page.count('class="kept"') == 20  # the last 20, newest first
    assert page.index("line 24") < page.index("line 05")
    assert "line 04" not in page
    assert 'id="kept-messages"' not in text(await get(client, room_url("lobby")))
