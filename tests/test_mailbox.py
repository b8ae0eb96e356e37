"""The local mailbox of a process-specific channel (pure asyncio, no Redis)."""

from __future__ import annotations

import asyncio

from broadcast_layer._node.mailbox import Mailbox

from .conftest import within


def letter(n: int) -> tuple:
    return (float("inf"), {"n": n}, False, None)


async def test_fifo_and_a_full_mailbox_refuses_and_counts():
    box = Mailbox(capacity=2)
    assert box.put(letter(1))
    assert box.put(letter(2))
    assert not box.put(letter(3))
    assert box.dropped == 1
    assert [(await box.get())[1]["n"] for _ in range(2)] == [1, 2]
    assert len(box) == 0


async def test_a_waiting_reader_is_woken_by_a_put():
    box = Mailbox(capacity=10)
    reader = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.put(letter(7))
    assert (await within(reader))[1] == {"n": 7}


async def test_a_reader_cancelled_after_being_woken_passes_the_letter_on():
    box = Mailbox(capacity=10)
    first = asyncio.create_task(box.get())
    second = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.put(letter(1))  # wakes `first`...
    first.cancel()  # ...which is cancelled before it takes the letter
    await asyncio.gather(first, return_exceptions=True)
    assert (await within(second))[1] == {"n": 1}


async def test_drain_empties_it():
    box = Mailbox(capacity=10)
    box.put(letter(1))
    box.put(letter(2))
    assert [item[1]["n"] for item in box.drain()] == [1, 2]
    assert len(box) == 0
