"""What metrics cost on the hot delivery path: ``python -m benchmarks.metrics_cost``.

Feeds one node's delivery (``Delivery.on_message``, what the pub/sub reader calls) with
group messages for a group of N local members, without Redis, and reports microseconds
per message with metrics off (``BROADCAST_LAYER_METRICS=0``) and on, each in a process
of its own (the recorder is bound at import). Stamped messages are used for both, so
the "on" figure includes the lag observation. ``--compare PATH`` compares another
checkout's delivery path with this one's instead, metrics off in both: what a change to
the hot path costs per message.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

SIZES = (1, 100, 1000, 5000)
#: broadcast_layer._metrics.STAMP, spelled out so that the script also runs on a checkout
#: from before metrics (PYTHONPATH=that/checkout), where it is one more message key.
STAMP = "__broadcast_ts__"
MESSAGES = 2000


async def _measure(size: int) -> float:
    messages = min(MESSAGES, 2_000_000 // size)  # about 2 M deliveries at most
    from broadcast_layer import BroadcastChannelLayer
    from broadcast_layer._node.mailbox import Mailbox

    layer = BroadcastChannelLayer(hosts=["redis://127.0.0.1:1/0"], capacity=2 * messages)
    node = layer.nodes.new_unattached()
    far = time.monotonic() + 3600
    for i in range(size):
        channel = f"specific.{node.id}!{i:012x}"
        node.channels.mailboxes[channel] = Mailbox(2 * messages)  # never over half full
        node.subscriptions.add("room", channel, far)
    pubsub_channel = node.core.keys.group_channel("room").encode()
    data = layer.serializer.serialize({"type": "m", "text": "x" * 40, STAMP: time.time()})
    on_message = node.delivery.on_message
    started = time.perf_counter()
    for _ in range(messages):
        pause = on_message(pubsub_channel, data)
        if pause is not None:  # back-pressure, as the reader awaits it (none here)
            await pause
    elapsed = time.perf_counter() - started
    await node.close()
    return elapsed / messages * 1e6


def _child() -> None:
    results = {}
    for size in SIZES:
        results[size] = min(asyncio.run(_measure(size)) for _ in range(5))
    print(json.dumps(results))


def main() -> None:
    """Interleave the modes 5 times; ``--before PATH`` adds a checkout without metrics;
    ``--compare PATH`` compares another checkout with this one, metrics off in both."""
    from . import interleave  # here: the child process runs this file on its own

    modes = {"off": {"BROADCAST_LAYER_METRICS": "0"}, "on": {"BROADCAST_LAYER_METRICS": "1"}}
    if "--before" in sys.argv:
        checkout = sys.argv[sys.argv.index("--before") + 1]
        modes = {"before": {"PYTHONPATH": checkout}, **modes}
    if "--compare" in sys.argv:
        checkout = sys.argv[sys.argv.index("--compare") + 1]
        off = {"BROADCAST_LAYER_METRICS": "0"}
        modes = {"that checkout": {"PYTHONPATH": checkout, **off}, "this one": off}
    code = interleave.child_code(__file__, "metrics_cost")
    rows = interleave.run(modes, code, 5)  # interleaved: load hits every mode alike
    interleave.print_table("members", "us per message", SIZES, rows, statistics.median)


if __name__ == "__main__":
    main()
