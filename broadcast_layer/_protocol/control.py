"""Control messages between nodes (remote join, leave, disconnect and their acks) on the wire.

A control message is ``!`` and a body, published on the target node's channel. Without
``symmetric_encryption_keys`` the body is JSON, and anyone who can publish to Redis can
forge one. With keys, the body is a Fernet token of that JSON (``MultiFernet``: the
first key seals, every key opens), so it is encrypted and authenticated. The Fernet keys
are derived from the configured ones for control messages only, so a payload token can
never pass for a control message. The sealed JSON names its target node, and a token is
accepted once, so a captured message can be neither redirected nor replayed. Whatever
fails these checks is dropped and reported to the node (which logs a rate-limited
warning, no traceback).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["CONTROL_MARK", "PROBE_MARK", "ControlCodec", "Reject"]

#: Node-channel payloads starting with this byte are control messages.
CONTROL_MARK = b"!"
#: A health probe: ``?`` and a random token, which a node publishes on its own channel
#: and reads back on its pub/sub connection (no channel name starts with ``?``).
PROBE_MARK = b"?"
_LABEL = b"broadcast_layer control message v1"
_CLOCK_SKEW = 60  # Fernet accepts tokens stamped up to 60 s in its future
_MAX_SEEN = 100_000  # tokens remembered against replay (about 3 MB)
#: The fields each operation must carry (all strings); anything else is dropped.
_REQUIRED = {
    "group_add": ("group", "channel"),
    "group_discard": ("group", "channel"),
    "disconnect": ("channel",),
    "ack": ("request",),
}

#: Told (kind, reason) of each message the codec drops; the node counts and logs them.
Reject = Callable[[str, str], None]


def _fernet_key(key: str | bytes) -> bytes:
    secret = key.encode() if isinstance(key, str) else key
    return base64.urlsafe_b64encode(hmac.new(secret, _LABEL, hashlib.sha256).digest())


class ControlCodec:
    """Seals control messages for another node and opens the ones addressed to this node."""

    def __init__(self, keys: Sequence[str | bytes] | None, ttl: float, reject: Reject) -> None:
        self._crypter: Any = None
        if keys:
            from cryptography.fernet import Fernet, MultiFernet

            self._crypter = MultiFernet([Fernet(_fernet_key(key)) for key in keys])
        self._ttl = max(1, int(ttl))
        self._reject = reject
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    @property
    def sealed(self) -> bool:
        """True when control messages are encrypted and authenticated (keys are set)."""
        return self._crypter is not None

    def seal(self, to: str, op: dict[str, str]) -> bytes:
        """The payload to publish on node ``to``'s channel for operation ``op``."""
        body = json.dumps({**op, "to": to}).encode()
        if self._crypter is None:
            return CONTROL_MARK + body
        token: bytes = self._crypter.encrypt(body)
        return CONTROL_MARK + token

    def open(self, payload: bytes, me: str) -> dict[str, str] | None:
        """The operation in ``payload`` for node ``me``, or None when it must be dropped."""
        body = payload[len(CONTROL_MARK) :]
        if self._crypter is not None:
            from cryptography.fernet import InvalidToken

            try:
                body = self._crypter.decrypt(body, self._ttl)
            except InvalidToken:
                return self._drop("not sealed with this layer's keys (forged, expired, other keys)")
            if self._replayed(payload):
                return self._drop("a replay of a message already applied")
        try:
            op = json.loads(body)
        except ValueError:
            return self._drop("not JSON")
        if not isinstance(op, dict) or not all(isinstance(v, str) for v in op.values()):
            return self._drop("not an object of strings")
        required = _REQUIRED.get(op.get("op", ""))
        if required is None or any(field not in op for field in required):
            return self._drop(f"unknown operation or missing fields: {sorted(op)}")
        # A sealed message must name this node; a plain one from an older version may not.
        if op.get("to", None if self.sealed else me) != me:
            return self._drop("addressed to another node")
        return op

    def _replayed(self, token: bytes) -> bool:
        now = time.monotonic()
        seen = self._seen
        while seen and (next(iter(seen.values())) < now or len(seen) >= _MAX_SEEN):
            seen.popitem(last=False)
        digest = hashlib.blake2b(token, digest_size=16).digest()
        if digest in seen:
            return True
        # Fernet accepts a token until its stamp plus the TTL, and stamps up to the clock
        # skew ahead of now: remember it at least that long.
        seen[digest] = now + self._ttl + _CLOCK_SKEW
        return False

    def _drop(self, reason: str) -> dict[str, str] | None:
        self._reject("a control message", reason)
        return None
