"""``python -m benchmarks.search``: what a room search costs inside Redis.

Starts a private redis-server, fills the registry's room indexes directly, and runs
``SyncRegistry.rooms()`` searches. Each figure is Redis's own time per ``rooms()`` page
(``INFO commandstats``: the usec of every EVALSHA, that is the page's ROOMS script and
the reap that runs before it, divided by the pages), so the client and the network are
left out.
For comparison it also times the Lua-pattern translation used before the linear
matcher (``*`` -> ``.*``) on patterns with 3 and 4 stars: each star multiplies the time
by about the name's length, so 8 stars would run for days.
"""

from __future__ import annotations

import time

import redis

from broadcast_layer._protocol.keys import Keys
from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.layer import BroadcastChannelLayer
from broadcast_layer.registry import SyncRegistry

HOSTILE = "*a*a*a*a*a*a*a*a*b"
# The translation of a glob the registry used before: one Lua '.*' per '*'.
OLD_MATCH = """
local names = redis.call('ZRANGE', KEYS[1], 0, -1)
local found = 0
for _, name in ipairs(names) do
  if string.find(name, ARGV[1]) then found = found + 1 end
end
return found
"""


def fill(client: redis.Redis, keys: Keys, names: list[str]) -> None:
    client.delete(keys.rooms_by_name(), keys.rooms_by_size())
    for start in range(0, len(names), 10_000):
        chunk = names[start : start + 10_000]
        client.zadd(keys.rooms_by_name(), dict.fromkeys(chunk, 0))
        client.zadd(keys.rooms_by_size(), dict.fromkeys(chunk, 1))


def usec_per_page(client: redis.Redis, registry: SyncRegistry, pattern: str) -> tuple[float, int]:
    """Redis's time per ``rooms()`` page while paging through a whole search, and the pages.

    Each page is two EVALSHA (the reap, then ROOMS), so the time is divided by the pages
    the search took, not by the EVALSHA count.
    """
    client.config_resetstat()
    pages = every_page(registry, pattern)
    stats = client.info("commandstats").get("cmdstat_evalsha", {"usec": 0})
    return stats["usec"] / pages, pages


def every_page(registry: SyncRegistry, pattern: str) -> int:
    """Page through every match of ``pattern``; returns the number of pages."""
    pages = 0
    offset: int | None = 0
    while offset is not None:
        page = registry.rooms(pattern, "name", offset, 50)
        pages += 1
        offset = page.next_offset
    return pages


def main() -> None:
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url, socket_timeout=600)
        layer = BroadcastChannelLayer(hosts=[server.url], prefix="bench")
        registry, keys = layer.sync_registry, Keys("bench")
        registry.rooms()  # loads the script

        rows = []
        fill(client, keys, ["a" * 36 + f"{i:04d}" for i in range(200)])
        for pattern in (HOSTILE, "*a*a*a*a*a*a*a*a*1*"):
            per_page, pages = usec_per_page(client, registry, pattern)
            rows.append((f"`{pattern}`, 200 rooms of 40 characters", per_page, pages))
        for old in ("^.*a.*a.*a.*b$", "^.*a.*a.*a.*a.*b$"):
            start = time.perf_counter()
            client.eval(OLD_MATCH, 1, keys.rooms_by_name(), old)
            before = (time.perf_counter() - start) * 1e6
            rows.append((f"before: Lua pattern `{old}`, same rooms", before, 1))

        fill(client, keys, ["a" * 60 + f"b{i:03d}" for i in range(1000)])
        worst = "*" + "?a" * 15 + "?b*"  # passes the literal checks, backtracks at every start
        per_page, pages = usec_per_page(client, registry, worst)
        rows.append((f"`{worst}`, 1,000 rooms of 64 characters", per_page, pages))

        names = [f"room-{i:06d}" for i in range(100_000)] + [f"chat.{i}" for i in range(20)]
        fill(client, keys, names)
        for pattern in ("chat.*", "*chat*", "*help*", "room-0999*"):
            per_page, pages = usec_per_page(client, registry, pattern)
            rows.append((f"`{pattern}`, 100,020 rooms (whole search)", per_page, pages))
        registry.close()
        client.close()

    print("| search | Redis time per page | pages |")
    print("|---|---|---|")
    for label, per_page, pages in rows:
        print(f"| {label} | {per_page / 1000:.2f} ms | {pages} |")


if __name__ == "__main__":
    main()
