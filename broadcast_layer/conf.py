"""The layer's ``CONFIG``, validated once into a frozen :class:`LayerConfig`."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from channels_redis.utils import decode_hosts

from .exceptions import ConfigurationError
from .retry import DEFAULT_BACKOFF, Backoff

DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
#: ``CONFIG["prefix"]`` is 1 to this many characters from PREFIX_CHARACTERS.
MAX_PREFIX_LENGTH = 64
PREFIX_CHARACTERS = "ASCII letters, digits, '-', '_' and '.'"
# No ":" (the layer's own separator: with it, one prefix's keys could start with
# another's, e.g. "a" and "a:node"), no glob characters (flush's SCAN patterns), no
# braces (hash tags), no whitespace.
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class LayerConfig:
    """Validated layer options; see docs/configuration.md for each one."""

    hosts: tuple[dict[str, Any], ...]
    prefix: str = "asgi"
    expiry: float = 60
    group_expiry: float = 86400
    capacity: int = 100
    channel_capacity: tuple[tuple[re.Pattern[str], int], ...] = ()
    symmetric_encryption_keys: tuple[str | bytes, ...] | None = None
    serializer_format: str = "msgpack"
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    subscribe_timeout: float = 10.0
    heartbeat_interval: float = 5.0
    node_ttl: float = 15.0
    reconnect_backoff: Backoff = field(default=DEFAULT_BACKOFF)

    def capacity_for(self, channel: str) -> int:
        """The capacity of ``channel``: the first matching pattern's, else the default."""
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel):
                return capacity
        return self.capacity


def _positive(name: str, value: Any, *, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigurationError(f"CONFIG[{name!r}] must be {kind}, got {value!r}")
    return value


def _compile_capacities(
    channel_capacity: Mapping[Any, int] | None,
) -> tuple[tuple[re.Pattern[str], int], ...]:
    if not channel_capacity:
        return ()
    if not isinstance(channel_capacity, Mapping):
        raise ConfigurationError("CONFIG['channel_capacity'] must be a dict of pattern: capacity")
    compiled = []
    for pattern, capacity in channel_capacity.items():
        _positive("channel_capacity", capacity, integer=True)
        if not isinstance(pattern, str) and not hasattr(pattern, "match"):
            raise ConfigurationError(
                f"CONFIG['channel_capacity'] keys must be globs or regexes, got {pattern!r}"
            )
        regex = pattern if hasattr(pattern, "match") else re.compile(fnmatch.translate(pattern))
        compiled.append((regex, capacity))
    return tuple(compiled)


def _decode_hosts(hosts: Sequence[Any] | None) -> tuple[dict[str, Any], ...]:
    try:
        decoded = decode_hosts(hosts)
    except ValueError as exc:
        raise ConfigurationError(f"CONFIG['hosts']: {exc}") from None
    for host in decoded:
        if ("master_name" in host) != ("sentinels" in host):
            raise ConfigurationError(
                "CONFIG['hosts']: a Sentinel host needs both 'sentinels' and 'master_name'"
            )
    return tuple(decoded)


def build_config(
    *,
    hosts: Sequence[Any] | None,
    prefix: str,
    expiry: float,
    group_expiry: float,
    capacity: int,
    channel_capacity: Mapping[Any, int] | None,
    symmetric_encryption_keys: Sequence[str | bytes] | None,
    serializer_format: str,
    max_message_size: int,
    subscribe_timeout: float,
    heartbeat_interval: float,
    node_ttl: float,
) -> LayerConfig:
    """Validate the layer's keyword arguments; raise :class:`ConfigurationError` naming the key."""
    if (
        not isinstance(prefix, str)
        or len(prefix) > MAX_PREFIX_LENGTH
        or not _PREFIX.fullmatch(prefix)
    ):
        raise ConfigurationError(
            f"CONFIG['prefix'] must be 1 to {MAX_PREFIX_LENGTH} {PREFIX_CHARACTERS}"
            f" (no ':', glob characters, braces or whitespace), got {prefix!r:.80}"
        )
    if _positive("node_ttl", node_ttl) <= _positive("heartbeat_interval", heartbeat_interval):
        raise ConfigurationError(
            f"CONFIG['node_ttl'] ({node_ttl}) must exceed heartbeat_interval ({heartbeat_interval})"
        )
    if isinstance(symmetric_encryption_keys, (str, bytes)):
        raise ConfigurationError("CONFIG['symmetric_encryption_keys'] must be a list of keys")
    return LayerConfig(
        hosts=_decode_hosts(hosts),
        prefix=prefix,
        expiry=_positive("expiry", expiry),
        group_expiry=_positive("group_expiry", group_expiry),
        capacity=_positive("capacity", capacity, integer=True),
        channel_capacity=_compile_capacities(channel_capacity),
        symmetric_encryption_keys=(
            tuple(symmetric_encryption_keys) if symmetric_encryption_keys else None
        ),
        serializer_format=serializer_format,
        max_message_size=_positive("max_message_size", max_message_size, integer=True),
        subscribe_timeout=_positive("subscribe_timeout", subscribe_timeout),
        heartbeat_interval=heartbeat_interval,
        node_ttl=node_ttl,
    )
