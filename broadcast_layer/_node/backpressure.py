"""Back-pressure on group fan-out: the reader waits for consumers instead of dropping.

A group message is put into every local member's mailbox on the pub/sub reader task. A
burst arrives faster than consumers run, so without a pause the reader would fill every
mailbox before any consumer ran and drop the rest. Instead, after each message:

- when a member's mailbox is more than half full, the reader yields to the event loop
  once, so consumers run before it reads the next message;
- when a member's mailbox is full, the reader stops reading the socket and waits until
  that consumer takes a letter, then puts the message in (Redis buffers meanwhile);
- a member whose mailbox has stayed full for ``STALL_AFTER`` seconds is *stalled*: the
  message is dropped for it (counted, logged), and later messages that find it full are
  dropped at once, without waiting, until its consumer has taken its mailbox down to
  half the capacity.

So one consumer that stops holds up this node's reader for at most ``STALL_AFTER`` per
stall, and nothing is dropped for consumers that keep up over that window. Nothing here
runs per member while mailboxes have room: :meth:`Mailbox.offer` reports the fill level.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .. import _metrics
from .mailbox import Letter, Mailbox, Pressure

#: Seconds a member's mailbox may stay full (not taken down to half) before the node
#: stops waiting for it and drops for it: the most one stalled consumer delays the
#: others, and the longest a burst may take to drain without loss. Below the health
#: probe's default timeout (2 s), so a stalled consumer does not fail the probe.
STALL_AFTER = 1.0

#: (channel, mailbox) pairs found full by one message's fan-out.
Blocked = list[tuple[str, Mailbox]]


def should_wait(mailbox: Mailbox, now: float) -> bool:
    """For a full mailbox: whether the fan-out waits for room (False: drop for it now)."""
    pressure = mailbox.pressure
    if pressure is None:  # found full for the first time since it was last half empty
        mailbox.pressure = Pressure(now)
        return True
    if pressure.stalled:
        return False
    if now - pressure.full_since >= STALL_AFTER:
        pressure.stalled = True
        return False
    return True


async def wait_for_room(
    letter: Letter,
    blocked: Blocked,
    mailboxes: dict[str, Mailbox],
    drop: Callable[[str], None],
) -> None:
    """Put ``letter`` into each blocked mailbox once it has room; drop it for the stalled.

    Waits for the mailboxes one after the other; each wait ends when its mailbox has
    been full for ``STALL_AFTER``, and those found full by one message share that
    window, so the call takes at most about ``STALL_AFTER``.
    """
    delivered = 0
    for channel, mailbox in blocked:
        while mailbox.full and should_wait(mailbox, now := time.monotonic()):
            since = mailbox.pressure.full_since if mailbox.pressure is not None else now
            left = since + STALL_AFTER - now
            try:
                async with asyncio.timeout(left):
                    await mailbox.room()
            except TimeoutError:
                pass
        if mailboxes.get(channel) is not mailbox:
            continue  # abandoned meanwhile: its name is gone, like its letters
        if mailbox.put(letter):
            delivered += 1
        else:
            drop(channel)
    if delivered:
        _metrics.recorder.delivered("group", delivered)
