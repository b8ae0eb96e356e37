"""The layer from Daphne-style loops, from async_to_sync (a fresh loop per call), from threads."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

from asgiref.sync import async_to_sync

from broadcast_layer.layer import BroadcastChannelLayer


def test_async_to_sync_with_a_fresh_loop_per_call(redis_url, prefix):
    layer = BroadcastChannelLayer(hosts=[redis_url], prefix=prefix)
    for n in range(20):
        assert async_to_sync(layer.group_send)("nobody", {"type": "m", "n": n}) == 0
        async_to_sync(layer.send)("sync.queue", {"type": "m", "n": n})
    received = [async_to_sync(layer.receive)("sync.queue")["n"] for _ in range(20)]
    assert received == list(range(20))
    assert len(layer.nodes) == 0  # every loop's node was closed with its loop


def test_several_loops_in_threads_share_one_layer(redis_url, prefix):
    layer = BroadcastChannelLayer(hosts=[redis_url], prefix=prefix)
    errors: list[BaseException] = []

    async def roundtrip(index: int) -> None:
        channel = await layer.new_channel()
        await layer.group_add(f"thread-{index}", channel)
        await layer.group_send(f"thread-{index}", {"type": "m", "i": index})
        assert (await layer.receive(channel))["i"] == index

    def run(index: int) -> None:
        try:
            for _ in range(3):
                async_to_sync(roundtrip)(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(layer.nodes) == 0


async def test_a_loop_ends_at_once_right_after_its_node_started(redis_url, prefix):
    """A fresh loop whose only call starts its node (to hear the owner's answer) ends
    with the node's background loops making their first Redis calls: asyncio.run()
    cancels them, and none may swallow the cancellation and keep that loop waiting."""
    owner = BroadcastChannelLayer(hosts=[redis_url], prefix=prefix)
    channel = await owner.new_channel()
    layer = BroadcastChannelLayer(hosts=[redis_url], prefix=prefix)

    def ask() -> None:
        assert asyncio.run(layer.disconnect(channel)) is True

    try:
        for _ in range(5):
            thread = threading.Thread(target=ask, daemon=True)
            thread.start()
            await asyncio.to_thread(thread.join, 30)
            assert not thread.is_alive(), "the loop never finished closing"
            assert (await owner.receive(channel))["type"] == "broadcast.disconnect"
        assert len(layer.nodes) == 0
    finally:
        await owner.close()


def test_no_pending_task_or_unclosed_connection_warnings_at_exit(redis_url, prefix):
    script = textwrap.dedent(
        f"""
        import asyncio, gc, warnings
        warnings.simplefilter("always")
        from asgiref.sync import async_to_sync
        from broadcast_layer.layer import BroadcastChannelLayer
        layer = BroadcastChannelLayer(hosts=[{redis_url!r}], prefix={prefix!r})

        async def member():
            channel = await layer.new_channel()
            await layer.group_add("exit-test", channel)
            await layer.group_send("exit-test", {{"type": "m"}})
            await layer.receive(channel)

        for _ in range(5):
            async_to_sync(member)()
        asyncio.run(member())        # a loop closed by asyncio.run
        loop = asyncio.new_event_loop()
        loop.run_until_complete(member())
        loop.close()                 # a loop closed by hand
        gc.collect()
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "ok", result.stderr
    for symptom in ("Task was destroyed", "Unclosed", "ResourceWarning", "never awaited"):
        assert symptom not in result.stderr, result.stderr


def test_each_loop_gets_its_own_node_when_loops_take_turns_in_one_thread(redis_url, prefix):
    """The layer remembers the last loop's node to skip a system call per call; two loops
    run in turn in one thread, and loops in other threads, must still get their own."""
    layer = BroadcastChannelLayer(hosts=[redis_url], prefix=prefix)
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()

    async def node_of_this_loop() -> object:
        return layer.nodes.current()

    try:
        nodes = [loop.run_until_complete(node_of_this_loop()) for loop in (first, second) * 2]
        assert nodes[2:] == nodes[:2]
        assert nodes[0] is not nodes[1]
        assert nodes[:2] == [layer.nodes._nodes[first], layer.nodes._nodes[second]]
        seen: list[object] = []
        thread = threading.Thread(target=lambda: seen.append(asyncio.run(node_of_this_loop())))
        thread.start()
        thread.join(10)
        assert len(seen) == 1
        assert seen[0] not in nodes  # that thread's loop, with a node of its own
        assert first.run_until_complete(node_of_this_loop()) is nodes[0]
    finally:
        first.close()
        second.close()
    assert len(layer.nodes) == 0
