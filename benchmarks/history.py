"""``python -m benchmarks.history [--sends N] [--size BYTES]``: the cost of a history group.

In one run, against one private redis-server, the same layer sends N messages to a plain
group and N to a history group (``CONFIG["history"]``), in alternating batches, each
group with one subscribed member on another node. For each kind it reports:

- round trips per send: the commands the sender's connection sent (``INFO
  commandstats`` of the client-sent commands, EVALSHA or PUBLISH), per send;
- Redis CPU per send: ``used_cpu_user + used_cpu_sys`` of ``INFO cpu``, per send, and the
  Redis-side time of the command itself (``usec`` of commandstats);
- the sender's wall time per send (sequential sends, each awaited);
- memory per kept message: ``MEMORY USAGE`` of the group's stream and its meta hash,
  divided by the entries kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import redis

from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.layer import BroadcastChannelLayer

from .harness import redis_cpu_seconds

BATCH = 500


def _stats(client: redis.Redis) -> dict[str, float]:
    commands = client.info("commandstats")
    out = {"cpu": redis_cpu_seconds(client)}
    for name in ("evalsha", "publish", "xadd"):
        row = commands.get(f"cmdstat_{name}", {"calls": 0, "usec": 0})
        out[f"{name}_calls"] = float(row["calls"])
        out[f"{name}_usec"] = float(row["usec"])
    return out


async def _run(url: str, sends: int, size: int) -> dict[str, Any]:
    history = {"hist.*": {"size": sends, "ttl": 3600}}
    sender = BroadcastChannelLayer(hosts=[url], prefix="bench", history=history)
    member = BroadcastChannelLayer(hosts=[url], prefix="bench", history=history)
    client = redis.Redis.from_url(url)
    groups = {"plain": "plain.room", "history": "hist.room"}
    totals: dict[str, dict[str, float]] = {kind: {} for kind in groups}
    received = {kind: 0 for kind in groups}
    message = {"type": "chat.message", "text": "x" * size}
    try:
        channels = {}
        for kind, group in groups.items():
            channels[kind] = await member.new_channel()
            await member.group_add(group, channels[kind])

        async def drain(kind: str, count: int) -> None:
            while received[kind] < count:
                await member.receive(channels[kind])
                received[kind] += 1

        # `sends` is a multiple of BATCH (main() makes it so), plus the warm-up send.
        readers = [asyncio.create_task(drain(kind, sends + 1)) for kind in groups]
        await sender.group_send("plain.room", message)  # connections and scripts loaded
        await sender.group_send("hist.room", message)
        done = 0
        while done < sends:
            for kind, group in groups.items():
                before, start = _stats(client), time.perf_counter()
                for _ in range(BATCH):
                    await sender.group_send(group, message)
                wall = time.perf_counter() - start
                after = _stats(client)
                row = totals[kind]
                row["wall"] = row.get("wall", 0.0) + wall
                for key in after:
                    row[key] = row.get(key, 0.0) + after[key] - before[key]
            done += BATCH
        async with asyncio.timeout(60):  # the member reads the last ones
            await asyncio.gather(*readers)
        stream, meta = "bench:history:{hist.room}", "bench:history:{hist.room}:meta"
        kept = int(client.xlen(stream))
        memory = int(client.memory_usage(stream, samples=0) or 0)
        memory += int(client.memory_usage(meta, samples=0) or 0)
    finally:
        client.close()
        await sender.close()
        await member.close()
    report: dict[str, Any] = {"sends": done, "payload_bytes": len(sender.encode_group(message))}
    for kind, row in totals.items():
        # A send is one EVALSHA (history) or one PUBLISH (plain) from the client; the
        # PUBLISH and XADD a script runs inside Redis are counted too, so subtract them.
        sent = row["evalsha_calls"] if kind == "history" else row["publish_calls"]
        report[kind] = {
            "round_trips_per_send": round(sent / done, 3),
            "redis_cpu_us_per_send": round(row["cpu"] / done * 1e6, 2),
            "command_us_per_send": round(
                (row["evalsha_usec"] if kind == "history" else row["publish_usec"]) / done, 2
            ),
            "wall_us_per_send": round(row["wall"] / done * 1e6, 1),
        }
    report["history"]["kept_messages"] = kept
    report["history"]["bytes_per_kept_message"] = round(memory / max(kept, 1), 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=10_000, help="messages per kind")
    parser.add_argument("--size", type=int, default=100, help="characters of text per message")
    args = parser.parse_args()
    sends = max(BATCH, args.sends - args.sends % BATCH)
    with EmbeddedRedis() as server:
        report = asyncio.run(_run(server.url, sends, args.size))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
