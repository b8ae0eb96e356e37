"""What one delivery costs a node, fan-out and receive: ``python -m benchmarks.receive_cost``.

One process, no Redis: one node's delivery path (``Delivery.on_message``, what the
pub/sub reader calls) fans group messages out to N local members, and N consumer tasks
take them with ``layer.receive()``, as the fan-out scenario's members do. The reader
hands over K messages between two turns of the event loop, as one socket read may hold
several; K = 1 makes every receive wait (a future and a wake-up per delivery). Prints
microseconds of the whole loop per delivery, the fastest of 5 runs per case.
``--compare PATH`` runs another checkout's package the same way, interleaved with this
one's, in processes of their own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

MEMBERS = 500  # one node's half of the fan-out scenario's N = 1,000 (--members)
MESSAGES = 300  # the scenario's burst at N = 1,000
BATCHES = (1, 10, 100)


async def _measure(per_turn: int, members: int) -> float:
    from broadcast_layer import BroadcastChannelLayer
    from broadcast_layer._node.mailbox import Mailbox

    layer = BroadcastChannelLayer(hosts=["redis://127.0.0.1:1/0"], capacity=2 * MESSAGES)
    node = layer.nodes.current()  # no Redis I/O: nothing here starts its background work
    far = time.monotonic() + 3600
    channels = [f"specific.{node.id}!{i:012x}" for i in range(members)]
    for channel in channels:
        node.channels.mailboxes[channel] = Mailbox(2 * MESSAGES)  # never over half full
        node.subscriptions.add("room", channel, far)
    pubsub_channel = node.core.keys.group_channel("room").encode()
    data = layer.serializer.serialize({"type": "m", "k": "b", "seq": 1, "text": "x" * 64})
    received = 0
    all_received = asyncio.get_running_loop().create_future()

    async def member(channel: str) -> None:
        nonlocal received
        for _ in range(MESSAGES):
            message = await layer.receive(channel)
            received += message["seq"]
        if received == members * MESSAGES:
            all_received.set_result(None)

    tasks = [asyncio.create_task(member(channel)) for channel in channels]
    await asyncio.sleep(0)  # every member waits in receive()
    on_message = node.delivery.on_message
    started = time.perf_counter()
    for first in range(0, MESSAGES, per_turn):
        for _ in range(min(per_turn, MESSAGES - first)):
            pause = on_message(pubsub_channel, data)
            if pause is not None:  # back-pressure, as the reader awaits it (none here)
                await pause
        await asyncio.sleep(0)  # the reader waits for the next read: consumers run
    await all_received
    elapsed = time.perf_counter() - started
    await asyncio.gather(*tasks)
    detached = layer.nodes.detach()
    if detached is not None:
        await detached.close()
    return elapsed / (members * MESSAGES) * 1e6


def _child(members: int) -> None:
    runs = {k: min(asyncio.run(_measure(k, members)) for _ in range(5)) for k in BATCHES}
    print(json.dumps(runs))


def main() -> None:
    """This checkout alone, or interleaved with another (``--compare PATH``) 5 times;
    ``--members N`` members (default 500)."""
    from . import interleave  # here: the child process runs this file on its own

    members = int(sys.argv[sys.argv.index("--members") + 1]) if "--members" in sys.argv else MEMBERS
    modes: interleave.Modes = {"this one": {}}
    if "--compare" in sys.argv:
        checkout = sys.argv[sys.argv.index("--compare") + 1]
        modes = {"that checkout": {"PYTHONPATH": checkout}, **modes}
    code = interleave.child_code(__file__, "receive_cost", str(members))
    rows = interleave.run(modes, code, 5 if len(modes) > 1 else 1)
    interleave.print_table("messages per reader turn", "us per delivery", BATCHES, rows, min)


if __name__ == "__main__":
    main()
