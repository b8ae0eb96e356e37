"""A node in a process of its own, for registry tests: `python -m tests.node_process URL PREFIX`.

Reads JSON commands on stdin, one per line, and answers each with one JSON line:
{"op": "new_channel"} -> {"channel": ...}; {"op": "group_add"|"group_discard", "group", "channel"};
{"op": "members", "group"} -> {"members": [...]} (its local view);
{"op": "collect", "channel"} starts receiving on the channel, keeping each message's "n";
{"op": "report"} -> {"received": {channel: [n, ...]}, "dropped": n}; {"op": "receive", "channel"} ->
{"message": ...} (one message). Options via env: NODE_TTL, HEARTBEAT (seconds),
DURABLE_CHANNELS (JSON, as CONFIG["durable_channels"]), CLUSTER ("1": URL is a node of a
Redis Cluster), CAPACITY.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from broadcast_layer.layer import BroadcastChannelLayer


async def main(url: str, prefix: str) -> None:
    layer = BroadcastChannelLayer(
        hosts=[url],
        prefix=prefix,
        cluster=os.environ.get("CLUSTER") == "1",
        node_ttl=float(os.environ.get("NODE_TTL", "15")),
        heartbeat_interval=float(os.environ.get("HEARTBEAT", "5")),
        durable_channels=json.loads(os.environ.get("DURABLE_CHANNELS", "{}")),
        capacity=int(os.environ.get("CAPACITY", "100")),
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    received: dict[str, list[int]] = {}
    collectors: list[asyncio.Task[None]] = []

    async def collect(channel: str) -> None:
        numbers = received.setdefault(channel, [])
        while True:
            numbers.append((await layer.receive(channel))["n"])

    print(json.dumps({"ready": True}), flush=True)
    while line := await reader.readline():
        command = json.loads(line)
        op = command["op"]
        if op == "new_channel":
            reply = {"channel": await layer.new_channel(), "node": layer.node_id}
        elif op in ("group_add", "group_discard"):
            await getattr(layer, op)(command["group"], command["channel"])
            reply = {"ok": True}
        elif op == "collect":
            collectors.append(asyncio.create_task(collect(command["channel"])))
            reply = {"ok": True}
        elif op == "receive":
            reply = {"message": await layer.receive(command["channel"])}
        elif op == "report":
            reply = {"received": received, "dropped": layer.stats().dropped}
        elif op == "members":
            reply = {"members": sorted(layer.local_members(command["group"]))}
        else:
            reply = {"error": f"unknown op {op}"}
        print(json.dumps(reply), flush=True)
    for task in collectors:
        task.cancel()
    await asyncio.gather(*collectors, return_exceptions=True)
    await layer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
