"""Groups on one node: memberships, ref-counted subscriptions, and publishing to a group.

The node subscribes to a group's channel when its first local member joins and
unsubscribes when the last one leaves (:class:`~.subscriptions.Subscriptions` counts).
A membership of another node's channel is that node's to change (a control message).
"""

from __future__ import annotations

import asyncio
import time

from .._protocol.keys import node_of
from .control import Control
from .core import NodeCore, both
from .history import History
from .registry_writer import RegistryWriter
from .subscriptions import Subscriptions


class Groups:
    """``group_add``, ``group_discard`` and ``group_send`` for one node."""

    def __init__(
        self,
        core: NodeCore,
        subscriptions: Subscriptions,
        registry: RegistryWriter,
        control: Control,
        history: History,
    ) -> None:
        self._core = core
        self.history = history
        self.subscriptions = subscriptions
        self._registry = registry
        self._control = control

    async def add(self, group: str, channel: str) -> None:
        """Add a membership; return once Redis confirmed the owning node's subscription.

        A channel of another node is added by that node (a control message), and this
        call waits for its confirmation; a channel whose node is gone is a no-op.
        """
        core, registry = self._core, self._registry
        owner = node_of(channel)
        if owner is not None and owner != core.id:
            await self._control.request(owner, "group_add", group=group, channel=channel)
            return
        core.start_background()
        born = core.register()
        if born is not None:  # a failure counts as a failed write: the next heartbeat re-asserts
            born.add_done_callback(_retrieved)
        new = channel not in self.subscriptions.members(group)
        first = self.subscriptions.add(group, channel, time.monotonic() + core.config.group_expiry)
        # Submitted right after the local change, before any await: the registry sees
        # concurrent joins and leaves of this node in the order they happened here.
        joined = registry.submit(core.calls.join(group, channel, core.id))
        subscriber = core.host_for(group).subscriber
        pubsub_channel = core.keys.group_channel(group)
        try:
            if first:
                self.history.reset(group)  # gapless from the first message delivered
                await subscriber.want([pubsub_channel])
            if subscriber.acknowledged(pubsub_channel):  # the common case: just the registry
                await registry.wait(joined)
            else:
                await both(
                    subscriber.wait_subscribed(pubsub_channel, core.config.subscribe_timeout),
                    registry.wait(joined),
                )
        except BaseException:
            if new:  # leave nothing behind: not in the group, not in the registry
                if self.subscriptions.discard(group, channel):
                    await subscriber.unwant([pubsub_channel])
                registry.submit_quietly(core.calls.leave(group, channel, core.id))
            raise

    async def discard(self, group: str, channel: str) -> None:
        """Remove a membership (a no-op if absent); unsubscribe when it was the last one."""
        core = self._core
        owner = node_of(channel)
        if owner is not None and owner != core.id:
            await self._control.request(owner, "group_discard", group=group, channel=channel)
            return
        if owner is None and channel not in self.subscriptions.members(group):
            return  # a normal channel held by another node (or nobody): see docs
        last = self.subscriptions.discard(group, channel)
        left = self._registry.submit(core.calls.leave(group, channel, core.id))
        if last:
            await both(self.unsubscribe([group]), self._registry.wait(left))
        else:
            await self._registry.wait(left)

    async def send(self, group: str, data: bytes) -> int:
        """Publish a serialized message once to the group's channel; return nodes reached.

        A history group's message is appended to its history and published in one script.
        """
        core = self._core
        policy = self.history.policy(group)
        if policy is not None:
            return await self.history.append(group, policy, data)
        return await core.host_for(group).publisher.publish(core.keys.group_channel(group), data)

    async def unsubscribe(self, groups: list[str]) -> None:
        """UNSUBSCRIBE from each group that has no local member (re-joined ones are kept)."""
        for group in groups:
            if group not in self.subscriptions:  # it may have been re-joined meanwhile
                self.history.reset(group)
                host = self._core.host_for(group)
                await host.subscriber.unwant([self._core.keys.group_channel(group)])

    def leave_stale(self, group: str, channels: list[str]) -> list[str]:
        """Remove memberships past ``group_expiry``; return the groups left without members."""
        core = self._core
        for channel in channels:
            self._registry.submit_quietly(core.calls.leave(group, channel, core.id))
        return [group for channel in channels if self.subscriptions.discard(group, channel)]

    def expire(self, now: float) -> list[str]:
        """Drop every membership past ``group_expiry`` here and in the registry.

        Returns the groups left without local members, sorted (to unsubscribe from).
        """
        core = self._core
        expired = self.subscriptions.expire(now)
        for group, channel in expired:
            self._registry.submit_quietly(core.calls.leave(group, channel, core.id))
        return sorted({group for group, _ in expired if group not in self.subscriptions})


def _retrieved(done: asyncio.Future[int]) -> None:
    """Mark a write's failure as seen (the writes queued after it report it)."""
    if not done.cancelled():
        done.exception()
