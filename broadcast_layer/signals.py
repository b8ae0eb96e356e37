"""Django signals for a node's pub/sub connection: lost, then restored.

Between the two, group messages and messages to the node's channels published to that
Redis host did not reach the node; Redis does not keep them. Apps listen to tell their
clients to resync (docs/operations.md):

    from broadcast_layer.signals import connection_restored

    def resync(sender, *, node_id, groups, **kwargs):
        ...

    connection_restored.connect(resync)

Each signal is sent with ``sender=None`` and the keyword arguments ``node_id`` (the
node's id), ``prefix`` (the layer's ``prefix``), ``host`` (the index of the host in
``hosts``) and ``groups`` (a frozenset of the groups with members on this node that
the host carries). ``connection_lost`` is sent once when a connection that was up
breaks; ``connection_restored`` once when a new connection has Redis's acknowledgement
of every subscription again. Receivers run on the node's event loop, in its pub/sub
reader: they must return quickly (start a task for any I/O). A receiver that raises is
logged and does not affect the others.
"""

from __future__ import annotations

import logging

from django.dispatch import Signal

__all__ = ["connection_lost", "connection_restored"]

logger = logging.getLogger(__name__)

#: Sent when a node's pub/sub connection to a host is lost.
connection_lost = Signal()
#: Sent when that connection is back and every subscription acknowledged.
connection_restored = Signal()


def send_connection_event(
    lost: bool, *, node_id: str, prefix: str, host: int, groups: frozenset[str]
) -> None:
    """Send ``connection_lost`` (``lost``) or ``connection_restored``; never raises."""
    signal = connection_lost if lost else connection_restored
    results = signal.send_robust(None, node_id=node_id, prefix=prefix, host=host, groups=groups)
    for receiver, result in results:
        if isinstance(result, Exception):
            logger.error("A %s receiver (%r) failed: %r",
                         "connection_lost" if lost else "connection_restored",
                         receiver, result)  # fmt: skip
