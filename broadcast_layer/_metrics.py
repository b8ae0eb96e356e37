"""Prometheus metrics, bound once at import: real recorders, or no-ops that cost one call.

Every part of the package records through :data:`recorder`. It is a
:class:`PrometheusRecorder` when ``prometheus_client`` imports (the ``metrics`` extra)
and the environment variable ``BROADCAST_LAYER_METRICS`` is not ``0``/``false``/``off``;
otherwise the base :class:`Recorder`, whose methods do nothing. Metrics live in
``prometheus_client``'s default registry, so multi-process mode
(``PROMETHEUS_MULTIPROC_DIR``) works as for any other metric; gauges are summed over
live processes there. The names are listed in docs/operations.md.

This module sits at the bottom of the package (it imports nothing of it), so the Redis
layer can count retries and reconnects without leaning on the node.
"""

from __future__ import annotations

import os
import time
from typing import Any

#: The key of the send time (Unix seconds, a float) in a stamped group message; removed
#: before the message reaches a consumer (docs/protocol.md).
STAMP = "__broadcast_ts__"

#: Seconds: publish -> local delivery lag is milliseconds when healthy, seconds when not.
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
               10.0, 30.0)  # fmt: skip
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0)  # fmt: skip


class Recorder:
    """Records nothing: what every part calls when metrics are off (each call a no-op)."""

    enabled = False

    def published(self, kind: str) -> None:
        """One message sent by this process (``kind``: group or channel)."""

    def delivered(self, kind: str, count: int) -> None:
        """``count`` letters put into local mailboxes (``kind``: group or direct)."""

    def dropped(self, reason: str) -> None:
        """One message dropped (``reason``: mailbox_full, expired, rejected)."""

    def reconnected(self) -> None:
        """One pub/sub reconnect (after a lost connection or a master switch)."""

    def retried(self, what: str) -> None:
        """One call tried again after a failure (``what``: the call's kind)."""

    def registry_write_failed(self, count: int) -> None:
        """``count`` registry writes failed (the node re-asserts its records)."""

    def subscriptions(self, delta: int) -> None:
        """Pub/sub channels subscribed in this process changed by ``delta``."""

    def channels(self, delta: int) -> None:
        """Local process-specific channels changed by ``delta``."""

    def pubsub_state(self, old: str, new: str) -> None:
        """A pub/sub connection moved from state ``old`` to ``new``."""

    def lag(self, sent: float) -> None:
        """A stamped group message sent at Unix time ``sent`` was delivered now."""

    def registry_call(self, call: str, started: float) -> None:
        """A script call that began at ``perf_counter()`` ``started`` ended now."""

    def stamp(self, message: dict[str, Any]) -> dict[str, Any]:
        """The message to serialize for a group send: unchanged when metrics are off."""
        return message


class PrometheusRecorder(Recorder):
    """Records into ``prometheus_client`` metrics in its default registry."""

    enabled = True

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        ns = "broadcast_layer"
        self._published = Counter(
            "messages_published", "Messages sent by this process, by kind (group, channel).",
            ["kind"], namespace=ns)  # fmt: skip
        self._delivered = Counter(
            "messages_delivered", "Messages put into local mailboxes, one per member, by kind "
            "(group, direct).", ["kind"], namespace=ns)  # fmt: skip
        self._dropped = Counter(
            "messages_dropped", "Messages dropped, by reason (mailbox_full, expired, rejected).",
            ["reason"], namespace=ns)  # fmt: skip
        self._reconnects = Counter(
            "pubsub_reconnects", "Pub/sub connections re-established.", namespace=ns
        )
        self._retries = Counter(
            "retries", "Redis calls tried again after a failure, by call.", ["call"],
            namespace=ns)  # fmt: skip
        self._write_failures = Counter(
            "registry_write_failures", "Registry writes that failed (the node re-asserts).",
            namespace=ns)  # fmt: skip
        self._subscriptions = Gauge(
            "subscriptions", "Pub/sub channels subscribed (groups with local members, and "
            "node channels).", namespace=ns, multiprocess_mode="livesum")  # fmt: skip
        self._channels = Gauge(
            "local_channels", "Process-specific channels open on this process's nodes.",
            namespace=ns, multiprocess_mode="livesum")  # fmt: skip
        self._states = Gauge(
            "pubsub_connections", "Pub/sub connections by state (connected, connecting).",
            ["state"], namespace=ns, multiprocess_mode="livesum")  # fmt: skip
        self._lag = Histogram(
            "delivery_lag_seconds", "Time from group_send to local delivery (stamped messages).",
            namespace=ns, buckets=LAG_BUCKETS)  # fmt: skip
        self._calls = Histogram(
            "registry_call_duration_seconds", "Duration of Lua script calls (registry writes "
            "and queries, sends to channels), by call.", ["call"], namespace=ns,
            buckets=CALL_BUCKETS)  # fmt: skip
        self._connected = self._states.labels("connected")
        self._connecting = self._states.labels("connecting")
        self._delivered_group = self._delivered.labels("group")
        self._delivered_direct = self._delivered.labels("direct")
        self._observe_lag = self._lag.observe
        # labels() costs about as much as the count itself: each child, once looked up,
        # is kept (prometheus_client returns the same child for the same labels anyway).
        self._published_by: dict[str, Any] = {}
        self._call_observers: dict[str, Any] = {}

    def published(self, kind: str) -> None:
        child = self._published_by.get(kind)
        if child is None:
            child = self._published_by[kind] = self._published.labels(kind)
        child.inc()

    def delivered(self, kind: str, count: int) -> None:
        if kind == "group":
            self._delivered_group.inc(count)
        else:
            self._delivered_direct.inc(count)

    def dropped(self, reason: str) -> None:
        self._dropped.labels(reason).inc()

    def reconnected(self) -> None:
        self._reconnects.inc()

    def retried(self, what: str) -> None:
        self._retries.labels(what).inc()

    def registry_write_failed(self, count: int) -> None:
        self._write_failures.inc(count)

    def subscriptions(self, delta: int) -> None:
        self._subscriptions.inc(delta)

    def channels(self, delta: int) -> None:
        self._channels.inc(delta)

    def pubsub_state(self, old: str, new: str) -> None:
        for state, delta in ((old, -1), (new, 1)):
            if state == "connected":
                self._connected.inc(delta)
            elif state == "connecting":
                self._connecting.inc(delta)

    def lag(self, sent: float) -> None:
        # Clocks of two machines: a negative difference is skew, not a delivery time.
        self._observe_lag(max(0.0, time.time() - sent))

    def registry_call(self, call: str, started: float) -> None:
        observe = self._call_observers.get(call)
        if observe is None:
            observe = self._call_observers[call] = self._calls.labels(call).observe
        observe(time.perf_counter() - started)

    def stamp(self, message: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(message, dict):
            return message  # encode() rejects it with the usual error
        return {**message, STAMP: time.time()}


def _wanted() -> bool:
    return os.environ.get("BROADCAST_LAYER_METRICS", "1").strip().lower() not in (
        "0", "false", "off", "no")  # fmt: skip


def _bind() -> Recorder:
    if not _wanted():
        return Recorder()
    try:
        return PrometheusRecorder()
    except ImportError:  # the metrics extra is not installed
        return Recorder()


#: The recorder every part calls (bound once, at import).
recorder: Recorder = _bind()
