"""The local mailbox of a process-specific channel (pure asyncio, no Redis)."""

from __future__ import annotations

import asyncio

from broadcast_layer._node.backpressure import STALL_AFTER, should_wait
from broadcast_layer._node.mailbox import FILLING, FULL, ROOMY, Mailbox

from .conftest import within


def letter(n: int) -> tuple:
    return (float("inf"), {"n": n}, None)


async def test_fifo_and_a_full_mailbox_refuses():
    box = Mailbox(capacity=2)
    assert box.put(letter(1))
    assert box.put(letter(2))
    assert not box.put(letter(3))
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


async def test_offer_says_when_the_mailbox_fills_and_refuses():
    box = Mailbox(capacity=4)
    # FULL: the fan-out decides whether to wait for room, or drop and count it.
    assert [box.offer(letter(n)) for n in range(5)] == [ROOMY, ROOMY, FILLING, FILLING, FULL]
    assert len(box) == 4


async def test_a_fan_out_waiting_for_room_is_woken_when_a_letter_is_taken():
    box = Mailbox(capacity=2)
    box.offer(letter(1))
    box.offer(letter(2))
    waiting = asyncio.create_task(box.room())  # as the fan-out waits for a full one
    await asyncio.sleep(0)
    assert not waiting.done()
    assert (await box.get())[1] == {"n": 1}
    await within(waiting)
    assert box.offer(letter(3)) is FILLING


async def test_a_stalled_mailbox_is_ordinary_again_once_taken_down_to_half():
    box = Mailbox(capacity=4)
    for n in range(4):
        box.offer(letter(n))
    assert should_wait(box, now=1.0)  # found full: an episode starts
    assert not should_wait(box, now=1.0 + STALL_AFTER)  # and it stalls
    await box.get()  # 3 left: still over half
    assert box.pressure is not None
    assert box.pressure.stalled
    await box.get()  # 2 left: half
    assert box.pressure is None
    assert should_wait(box, now=5.0)  # full again later: a new episode, waited for


def test_the_fan_out_waits_for_a_full_mailbox_until_it_has_been_full_for_the_bound():
    box = Mailbox(capacity=1)
    assert should_wait(box, now=100.0)  # found full for the first time
    assert should_wait(box, now=100.0 + STALL_AFTER / 2)
    assert not should_wait(box, now=100.0 + STALL_AFTER)  # full for the whole bound
    assert box.pressure is not None
    assert box.pressure.stalled
    assert not should_wait(box, now=100.0 + STALL_AFTER / 2)  # stalled: never again
