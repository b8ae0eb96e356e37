"""Room-search globs: checked in Python, matched in Redis in linear time, prefix searches
served from the index's rank range. The Lua matcher runs on the real redis-server."""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from broadcast_layer import registry
from broadcast_layer._protocol import scripts
from broadcast_layer._protocol.globs import MAX_GLOB_LENGTH, MAX_GLOB_WILDCARDS, compile_glob
from broadcast_layer._protocol.keys import Keys
from broadcast_layer._protocol.validation import NAME_CHARACTERS
from broadcast_layer.exceptions import InvalidPattern
from broadcast_layer.layer import BroadcastChannelLayer
from broadcast_layer.registry import SyncRegistry

HOSTILE = "*a*a*a*a*a*a*a*a*b"  # exponential for a Lua pattern with ".*" per "*"

# Runs the matcher alone: KEYS are names, ARGV the glob's tokens; returns per name
# [1 if it matches else 0, steps].
MATCH_EACH = (
    scripts.GLOB
    + """
local glob = glob_compile(ARGV)
local out = {}
for i, name in ipairs(KEYS) do
  local hit, steps = glob_match(name, glob)
  out[i] = {hit and 1 or 0, steps}
end
return out
"""
)


def lua_match(client: redis.Redis, pattern: str, names: list[str]) -> list[tuple[bool, int]]:
    tokens = compile_glob(pattern).tokens
    return [(bool(hit), steps) for hit, steps in client.eval(MATCH_EACH, len(names), *names,
                                                              *tokens)]  # fmt: skip


def step_bound(name: str, pattern: str) -> int:
    return (len(name) + 1) * (len(compile_glob(pattern).tokens) + 1)


@pytest.fixture
def sync_registry(redis_url: str, prefix: str) -> Iterator[SyncRegistry]:
    layer = BroadcastChannelLayer(hosts=[redis_url], prefix=prefix)
    yield layer.sync_registry
    layer.sync_registry.close()


def index(client: redis.Redis, prefix: str, names: list[str]) -> None:
    """Put room names in the registry's two indexes (size 1 each), as JOIN would."""
    keys = Keys(prefix)
    client.zadd(keys.rooms_by_name(), dict.fromkeys(names, 0))
    client.zadd(keys.rooms_by_size(), dict.fromkeys(names, 1))


def every_page(sync_registry: SyncRegistry, pattern: str | None, order: str = "name",
               limit: int = 7) -> list[str]:  # fmt: skip
    """Follow next_offset to the end; the room names of every page, in order."""
    names, offset = [], 0
    while offset is not None:
        page = sync_registry.rooms(pattern, order, offset, limit)  # type: ignore[arg-type]
        names += [room.name for room in page.rooms]
        offset = page.next_offset
    return names


# -- the hostile pattern ------------------------------------------------------------------


def test_the_hostile_pattern_over_200_long_names_is_linear(redis_client, sync_registry, prefix):
    names = ["a" * 36 + f"{i:04d}" for i in range(200)]  # 40 characters, no "b"
    index(redis_client, prefix, names)
    assert sync_registry.rooms(HOSTILE, limit=1000).rooms == ()
    assert every_page(sync_registry, "*a*a*a*a*a*a*a*a*1*") == [n for n in names if "1" in n[36:]]
    # What the search costs per name, counted by the matcher itself: the literal-end
    # check rejects these at once; names that pass it stay within the linear bound.
    every = names + [name[:-1] + "b" for name in names]
    for name, (hit, steps) in zip(every, lua_match(redis_client, HOSTILE, every), strict=True):
        assert hit == fnmatch.fnmatchcase(name, HOSTILE)
        assert steps <= step_bound(name, HOSTILE)


def test_the_worst_backtracking_stays_within_the_bound(redis_client):
    name = "a" * 94 + "0000b"
    for pattern in ("*" + "?a" * 15 + "?b*", "*a" * 31 + "*", "*" + "a?" * 15 + "*b"):
        [(hit, steps)] = lua_match(redis_client, pattern, [name])
        assert hit == fnmatch.fnmatchcase(name, pattern)
        assert steps <= step_bound(name, pattern)


def test_a_search_stops_at_its_step_budget_and_pages_on(redis_client, sync_registry, prefix,
                                                        monkeypatch):  # fmt: skip
    names = [f"{'a' * 60}b{i:03d}" for i in range(60)]
    index(redis_client, prefix, names)
    pattern = "*" + "?a" * 15 + "?b*"  # thousands of steps per name
    monkeypatch.setattr(registry, "MATCH_STEP_BUDGET", 10_000)
    first = sync_registry.rooms(pattern, limit=1000)
    assert first.next_offset is not None
    assert first.next_offset < len(names)
    assert every_page(sync_registry, pattern, limit=1000) == sorted(names)


# -- the glob syntax ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("room[", "never closed"),
        ("room[]", "empty"),
        ("room[!]", "empty"),
        ("room[z-a]", "reversed"),
        ("room[a:]", "can never be in a room name"),
        ("room!", "can never be in a room name"),
        ("room]", "can never be in a room name"),
        ("room\n", "can never be in a room name"),
        ("room *", "can never be in a room name"),
        ("x" * (MAX_GLOB_LENGTH + 1), f"longer than {MAX_GLOB_LENGTH}"),
        ("?" * (MAX_GLOB_WILDCARDS + 1), f"more than {MAX_GLOB_WILDCARDS} wildcards"),
    ],
)
def test_a_malformed_glob_is_refused_before_redis(sync_registry, pattern, reason):
    with pytest.raises(InvalidPattern, match=reason) as caught:
        sync_registry.calls.rooms(pattern)  # builds the call: no I/O yet
    assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidPattern, match=reason):
        sync_registry.rooms(pattern)


def test_the_literal_start_of_a_glob():
    assert compile_glob("chat.*").prefix == "chat."
    assert compile_glob("chat.lobby").prefix == "chat.lobby"
    assert compile_glob("ch?t*").prefix == "ch"
    assert compile_glob("[ab]*").prefix == ""
    assert compile_glob("a**b").tokens == ("=a", "*", "=b")
    assert compile_glob("**").matches_everything


# -- properties: the Lua matcher agrees with fnmatch -------------------------------------

SMALL = "ab.-"  # a small alphabet makes matches likely
name_text = st.one_of(
    st.text(alphabet=SMALL, min_size=1, max_size=30),
    st.text(alphabet=sorted(NAME_CHARACTERS), min_size=1, max_size=99),
)
name_char = st.sampled_from(sorted(NAME_CHARACTERS))
class_char = st.one_of(st.sampled_from(SMALL), name_char)


@st.composite
def char_class(draw: st.DrawFn) -> str:
    items = []
    for _ in range(draw(st.integers(1, 3))):
        first = draw(class_char)
        if first != "-" and draw(st.booleans()):
            last = draw(class_char.filter(lambda c, f=first: c >= f and c != "-"))
            items.append(f"{first}-{last}")
        elif first != "-":  # a lone "-" inside a class would read as a range
            items.append(first)
    body = "".join(items) or "a"
    if draw(st.booleans()):  # a "-" first in the class is the character itself
        body = "-" + body
    return "[" + ("!" if draw(st.booleans()) else "") + body + "]"


glob_piece = st.one_of(
    st.sampled_from(SMALL),
    name_char,
    st.just("*"),
    st.just("?"),
    char_class(),
)
globs = st.lists(glob_piece, min_size=1, max_size=12).map("".join)


@given(pattern=globs, names=st.lists(name_text, min_size=1, max_size=20))
def test_the_lua_matcher_agrees_with_fnmatch(redis_client, pattern, names):
    for name, (hit, steps) in zip(names, lua_match(redis_client, pattern, names), strict=True):
        assert hit == fnmatch.fnmatchcase(name, pattern), (name, pattern)
        assert steps <= step_bound(name, pattern)


@given(pattern=st.text(max_size=40))
def test_any_string_is_a_glob_or_a_clear_error(pattern):
    try:
        glob = compile_glob(pattern)
    except InvalidPattern as exc:
        error = str(exc)
    else:
        error = ""
        assert len(glob.tokens) <= len(pattern)
    assert "\n" not in error


# -- prefix searches ----------------------------------------------------------------------

PREFIX_NAMES = [
    "chas", "chat", "chat-", "chat.", "chat.a", "chat.b.c", "chat.lobby", "chat0", "chau",
    "chatter", "a", "zz", *(f"chat.{i:03d}" for i in range(40)), *(f"room-{i}" for i in range(40)),
]  # fmt: skip


@pytest.mark.parametrize(
    "pattern", ["chat*", "chat.*", "chat.?", "chat", "chat.0[1-2]?", "cha[st]*", "chat.*.c", "z*"]
)
def test_a_prefix_search_returns_what_a_full_scan_does(redis_client, sync_registry, prefix,
                                                       pattern, monkeypatch):  # fmt: skip
    index(redis_client, prefix, PREFIX_NAMES)
    expected = sorted(name for name in PREFIX_NAMES if fnmatch.fnmatchcase(name, pattern))
    assert every_page(sync_registry, pattern) == expected
    assert every_page(sync_registry, pattern, limit=1000) == expected
    monkeypatch.setattr(registry, "SCAN_BUDGET", 3)  # pages end early and resume
    assert every_page(sync_registry, pattern) == expected
    by_size = every_page(sync_registry, pattern, order="size")  # no rank range: a full scan
    assert sorted(by_size) == expected


def test_a_prefix_search_reads_only_its_range(redis_client, sync_registry, prefix, monkeypatch):
    names = [f"a{i:04d}" for i in range(3000)] + ["chat.1", "chat.2"] + [f"z{i}" for i in range(9)]
    index(redis_client, prefix, names)
    # One call may examine only 5 names: a scan from the start would find nothing.
    monkeypatch.setattr(registry, "SCAN_BUDGET", 5)
    page = sync_registry.rooms("chat.*")
    assert [room.name for room in page.rooms] == ["chat.1", "chat.2"]
    assert page.next_offset is None
    # An offset from an earlier page (a position in the whole index) still works.
    assert [r.name for r in sync_registry.rooms("chat.*", offset=3001).rooms] == ["chat.2"]


@given(
    names=st.lists(name_text, min_size=1, max_size=40, unique=True),
    start=st.text(alphabet=SMALL, min_size=1, max_size=3),
    rest=st.sampled_from(["*", "?*", "*a", "", "[a-b]*"]),
)
def test_prefix_searches_page_like_a_scan(redis_client, redis_url, names, start, rest):
    prefix = "t" + uuid.uuid4().hex[:10]
    layer = BroadcastChannelLayer(hosts=[redis_url], prefix=prefix)
    try:
        index(redis_client, prefix, names)
        pattern = start + rest
        expected = sorted(name for name in names if fnmatch.fnmatchcase(name, pattern))
        assert every_page(layer.sync_registry, pattern, limit=3) == expected
    finally:
        layer.sync_registry.close()
        redis_client.delete(*redis_client.keys(f"{prefix}:*") or ["-"])
