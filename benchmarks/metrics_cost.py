"""What metrics cost on the hot delivery path: ``python -m benchmarks.metrics_cost``.

Feeds one node's delivery (``Delivery.on_message``, what the pub/sub reader calls) with
group messages for a group of N local members, without Redis, and reports microseconds
per message with metrics off (``BROADCAST_LAYER_METRICS=0``) and on, each in a process
of its own (the recorder is bound at import). Stamped messages are used for both, so
the "on" figure includes the lag observation.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

SIZES = (1, 100, 1000)
#: broadcast_layer._metrics.STAMP, spelled out so that the script also runs on a checkout
#: from before metrics (PYTHONPATH=that/checkout), where it is one more message key.
STAMP = "__broadcast_ts__"
MESSAGES = 2000


async def _measure(size: int) -> float:
    from broadcast_layer import BroadcastChannelLayer
    from broadcast_layer._node.mailbox import Mailbox

    layer = BroadcastChannelLayer(hosts=["redis://127.0.0.1:1/0"], capacity=MESSAGES + 1)
    node = layer.nodes.new_unattached()
    far = time.monotonic() + 3600
    for i in range(size):
        channel = f"specific.{node.id}!{i:012x}"
        node.channels.mailboxes[channel] = Mailbox(MESSAGES + 1)
        node.subscriptions.add("room", channel, far)
    pubsub_channel = node.core.keys.group_channel("room").encode()
    data = layer.serializer.serialize({"type": "m", "text": "x" * 40, STAMP: time.time()})
    on_message = node.delivery.on_message
    started = time.perf_counter()
    for _ in range(MESSAGES):
        on_message(pubsub_channel, data)
    elapsed = time.perf_counter() - started
    await node.close()
    return elapsed / MESSAGES * 1e6


def _child() -> None:
    results = {}
    for size in SIZES:
        results[size] = min(asyncio.run(_measure(size)) for _ in range(5))
    print(json.dumps(results))


def main() -> None:
    """Interleave the modes 3 times; ``--before PATH`` adds a checkout without metrics."""
    modes = {"off": {"BROADCAST_LAYER_METRICS": "0"}, "on": {"BROADCAST_LAYER_METRICS": "1"}}
    if "--before" in sys.argv:
        checkout = sys.argv[sys.argv.index("--before") + 1]
        modes = {"before": {"PYTHONPATH": checkout}, **modes}
    rows: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for _ in range(5):  # interleaved, so load from other processes hits every mode alike
        for mode, extra in modes.items():
            env = {**os.environ, **extra}
            cwd = extra.get("PYTHONPATH")  # the checkout's package, not this one's
            out = subprocess.run(
                [sys.executable, "-c", _CHILD], env=env, cwd=cwd, capture_output=True, text=True,
                check=True,
            )  # fmt: skip
            rows[mode].append(json.loads(out.stdout))
    print("| members | " + " | ".join(f"{mode}, us per message" for mode in modes) + " |")
    print("|---" * (len(modes) + 1) + "|")
    for size in SIZES:
        cells = [statistics.median(r[str(size)] for r in rows[mode]) for mode in modes]
        print(f"| {size} | " + " | ".join(f"{cell:.2f}" for cell in cells) + " |")


#: The child runs this file's measurement from source, so it can import another checkout.
_CHILD = (
    f"ns = {{'__name__': 'metrics_cost', '__file__': {__file__!r}}}; "
    f"exec(open({__file__!r}).read(), ns); ns['_child']()"
)


if __name__ == "__main__":
    main()
