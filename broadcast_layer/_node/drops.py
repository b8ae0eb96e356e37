"""Warnings for messages dropped at a full mailbox, rate-limited per channel.

A slow consumer can drop thousands of group messages a second; logging each would
flood the log. :class:`FullMailboxLog` writes at most one line per channel per
``interval``, each with the number of drops since the previous line, and reports a
burst's tail from the node's upkeep. (:class:`DropLog` does the same per kind for
messages rejected as forged or undecodable.)
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from .. import _metrics

#: Seconds between two warnings about the same channel.
INTERVAL = 10.0


class FullMailboxLog:
    """Counts drops per channel and logs them as rate-limited WARNING lines."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._held: dict[str, int] = {}  # drops not logged yet, per channel
        self._logged_at: dict[str, float] = {}  # when each channel's last line was written

    def record(self, channel: str) -> None:
        """Count one dropped message; log now unless this channel was logged recently."""
        held = self._held.get(channel, 0) + 1
        now = self._clock()
        last = self._logged_at.get(channel)
        if last is None or now - last >= self._interval:
            self._held.pop(channel, None)
            self._log(channel, held, now)
        else:
            self._held[channel] = held

    def flush(self) -> None:
        """Log drops held back for a full interval, and forget channels quiet for as long.

        Called from the node's upkeep, so a burst's tail is reported even when no
        further drop follows it, and the bookkeeping stays bounded.
        """
        now = self._clock()
        for channel, last in list(self._logged_at.items()):
            if now - last < self._interval:
                continue
            held = self._held.pop(channel, 0)
            if held:
                self._log(channel, held, now)
            else:
                del self._logged_at[channel]

    def _log(self, channel: str, count: int, now: float) -> None:
        self._logged_at[channel] = now
        self._logger.warning(
            "Dropped %d message%s for %s: its mailbox is full (consumer too slow; "
            "see capacity). At most one such line per channel every %gs.",
            count, "" if count == 1 else "s", channel, self._interval,
        )  # fmt: skip


class DropLog:
    """Counts dropped messages and logs them as warnings, at most one line per kind per interval.

    A flood of forged or undecodable messages costs one log line every ``interval``
    seconds (with the number suppressed meanwhile), and never a traceback.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.count = 0
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def drop(self, kind: str, reason: str) -> None:
        """Record one dropped message of ``kind`` (e.g. "a control message") and why."""
        self.count += 1
        _metrics.recorder.dropped("rejected")
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] += 1
            return
        self._last[kind] = now
        more = self._suppressed.pop(kind, 0)
        since = f" ({more} more dropped since the last warning)" if more else ""
        self._logger.warning("Dropped %s: %s%s", kind, reason, since)
