"""Channel churn in a process of its own, for the soak test (its RSS is measured alone).

``python -m tests.churn_process URL PREFIX SECONDS``: a few workers each loop over
new_channel, group_add (one of a few groups), a reply sent by a second node, receive,
then drop the channel, as request/reply code does. With a 1 s ``expiry`` the sweep
frees dropped channels. Every second it prints one JSON line: {"node", "made",
"channels"}; it stops after SECONDS, closes its layers and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from broadcast_layer.layer import BroadcastChannelLayer

EXPIRY = 1.0
WORKERS = 4
GROUPS = [f"churn-{n}" for n in range(8)]


async def churn(layer: BroadcastChannelLayer, replier: BroadcastChannelLayer,
                made: list[int], stop: asyncio.Event) -> None:  # fmt: skip
    # The flag as well as cancellation: redis-py can swallow a CancelledError.
    while not stop.is_set():
        channel = await layer.new_channel("churn")
        await layer.group_add(GROUPS[made[0] % len(GROUPS)], channel)
        await replier.send(channel, {"type": "reply", "n": made[0]})
        await layer.receive(channel)
        made[0] += 1  # and the channel is dropped: nothing refers to it any more


async def main(url: str, prefix: str, seconds: float) -> None:
    layer = BroadcastChannelLayer(hosts=[url], prefix=prefix, expiry=EXPIRY)
    replier = BroadcastChannelLayer(hosts=[url], prefix=prefix, expiry=EXPIRY)
    made, stop = [0], asyncio.Event()
    workers = [asyncio.create_task(churn(layer, replier, made, stop)) for _ in range(WORKERS)]
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(1)  # a reporting period, not a wait for state
            stats = layer.stats()
            report = {"node": stats.node_id, "made": made[0], "channels": stats.channels}
            print(json.dumps(report), flush=True)
    finally:
        stop.set()
        for worker in workers:
            worker.cancel()
        try:
            async with asyncio.timeout(20):
                await asyncio.gather(*workers, return_exceptions=True)
                await layer.close()
                await replier.close()
        except TimeoutError:
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            raise


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
