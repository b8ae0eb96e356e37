"""``python -m benchmarks.presence_cost [N ...]``: what one join costs in a demo room of N.

Runs the demo's chat consumer in this process on the real layer and a private
redis-server: fills a room with N members, lets presence settle, then lets one more
person join and counts, from ``INFO commandstats``, the Redis commands that join
caused (EVALSHA and PUBLISH sent by the layer, and the commands the scripts ran inside
Redis), and the presence frames each member received for it. Then 20 people join at
once and it counts the presence frames each member got for the 20. It uses only the
consumer's WebSocket protocol, so it measures any version of the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import django
from django.conf import settings

from broadcast_layer.contrib.embedded import EmbeddedRedis

SETTLE = 1.5  # seconds of silence that mean presence has settled (interval 0.5 s)
BURST = 20


async def _connect(router: Any, name: str) -> Any:
    from channels.testing import WebsocketCommunicator

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await router({**scope, "session": {"chat_name": name}}, receive, send)

    communicator = WebsocketCommunicator(app, "/ws/chat/bench/")
    connected, _ = await communicator.connect(timeout=30)
    if not connected:
        raise RuntimeError("the consumer refused the connection")
    return communicator


async def _drain(members: list[Any]) -> list[int]:
    """Read every member's frames until all are quiet; the presence frames of each."""

    async def drain(communicator: Any) -> int:
        frames = 0
        while not await communicator.receive_nothing(SETTLE):
            frame = json.loads((await communicator.receive_output())["text"])
            frames += str(frame.get("type")).startswith("presence")
        return frames

    return list(await asyncio.gather(*map(drain, members)))


def _calls(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


async def measure(size: int, client: Any) -> dict[str, Any]:
    from channels.routing import URLRouter

    from demo_chat.chat.routing import websocket_urlpatterns

    router = URLRouter(websocket_urlpatterns)
    members = [await _connect(router, f"m{i}") for i in range(size)]
    await _drain(members)
    before = _calls(client)
    members.append(await _connect(router, "newcomer"))
    frames = await _drain(members[:-1])
    after = _calls(client)
    spent = {name: n - before.get(name, 0) for name, n in after.items()}
    spent.pop("info", None)
    burst = [await _connect(router, f"b{i}") for i in range(BURST)]
    burst_frames = await _drain(members)
    for communicator in members + burst:
        await communicator.disconnect()
    return {
        "members": size,
        "evalsha": spent.get("evalsha", 0),
        "publish": spent.get("publish", 0),
        "inside scripts": sum(spent.values()) - spent.get("evalsha", 0) - spent.get("publish", 0),
        "frames per member": max(frames, default=0),
        f"frames per member, {BURST} joins": max(burst_frames, default=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.presence_cost", description=__doc__)
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 50, 200])
    args = parser.parse_args()
    import redis

    with EmbeddedRedis() as server:
        settings.configure(
            INSTALLED_APPS=["channels"],
            CHANNEL_LAYERS={"default": {
                "BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
                # No heartbeat tick or dead-node check in the window: only the join counts.
                "CONFIG": {"hosts": [server.url], "heartbeat_interval": 60, "node_ttl": 120},
            }},
            CHAT_PRESENCE_INTERVAL=0.5,
        )  # fmt: skip
        django.setup()
        client = redis.Redis.from_url(server.url)
        try:
            for size in args.sizes:
                client.flushall()
                print(json.dumps(asyncio.run(measure(size, client))), flush=True)
        finally:
            client.close()


if __name__ == "__main__":
    main()
