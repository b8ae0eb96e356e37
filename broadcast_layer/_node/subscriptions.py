"""Which local channels are in which group: the ref-counting state machine.

Pure bookkeeping with no I/O: every method returns the groups whose pub/sub
subscription must change, and the caller (the layer) issues those commands.
A group is *wanted* while it has at least one unexpired member.
"""

from __future__ import annotations

from collections.abc import Iterable


class Subscriptions:
    """group -> {channel: expiry deadline}, plus the reverse index channel -> groups."""

    def __init__(self) -> None:
        self._members: dict[str, dict[str, float]] = {}
        self._groups_of: dict[str, set[str]] = {}

    def add(self, group: str, channel: str, deadline: float) -> bool:
        """Add or refresh a membership. True when the group just became wanted."""
        members = self._members.get(group)
        first = members is None
        if members is None:
            members = self._members[group] = {}
        members[channel] = deadline
        self._groups_of.setdefault(channel, set()).add(group)
        return first

    def discard(self, group: str, channel: str) -> bool:
        """Remove a membership if present. True when the group just became unwanted."""
        members = self._members.get(group)
        if members is None or members.pop(channel, None) is None:
            return False
        groups = self._groups_of[channel]
        groups.discard(group)
        if not groups:
            del self._groups_of[channel]
        if members:
            return False
        del self._members[group]
        return True

    def remove_channel(self, channel: str) -> list[str]:
        """Drop a channel from every group; return the groups that became unwanted."""
        return [g for g in list(self._groups_of.get(channel, ())) if self.discard(g, channel)]

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Drop memberships whose deadline has passed; return them as (group, channel).

        Groups among them that are no longer ``in`` this object became unwanted.
        """
        expired = []
        for group, members in list(self._members.items()):
            for channel in [c for c, deadline in members.items() if deadline <= now]:
                self.discard(group, channel)
                expired.append((group, channel))
        return expired

    def members(self, group: str) -> dict[str, float]:
        """The group's local members and their deadlines (a live view: do not mutate)."""
        return self._members.get(group, {})

    def groups_of(self, channel: str) -> Iterable[str]:
        """The groups a local channel is in."""
        return tuple(self._groups_of.get(channel, ()))

    def wanted(self) -> set[str]:
        """Every group with at least one local member."""
        return set(self._members)

    def __contains__(self, group: object) -> bool:
        return group in self._members
