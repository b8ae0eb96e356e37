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
