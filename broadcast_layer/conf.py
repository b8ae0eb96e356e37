"""The layer's ``CONFIG``, validated once into a frozen :class:`LayerConfig`."""

from __future__ import annotations

import fnmatch
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from channels_redis.utils import create_pool, decode_hosts
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.connection import parse_url

from .exceptions import ConfigurationError
from .pools import PoolLimits
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
    failover_timeout: float = 10.0
    max_connections: int = 100
    pool_timeout: float = 5.0
    reconnect_backoff: Backoff = field(default=DEFAULT_BACKOFF)

    @property
    def pool_limits(self) -> PoolLimits:
        """The size of each command-connection pool and how long a caller waits for one."""
        return PoolLimits(self.max_connections, self.pool_timeout)

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
        if not isinstance(host, dict):  # pragma: no cover - decode_hosts makes dicts
            raise ConfigurationError(f"CONFIG['hosts']: invalid entry {host!r}")
        if ("master_name" in host) != ("sentinels" in host):
            raise ConfigurationError(
                "CONFIG['hosts']: a Sentinel host needs both 'sentinels' and 'master_name'"
            )
    errors = connection_option_errors(hosts)
    if errors:
        raise ConfigurationError("; ".join(errors))
    return tuple(decoded)


# -- connection options of a hosts entry, checked against what redis-py accepts -------

#: Keys of a host dict that channels_redis's create_pool consumes itself.
_STRUCTURAL = frozenset({"address", "sentinels", "master_name", "sentinel_kwargs"})
#: Options SentinelConnectionPool takes from its **kwargs (not in any signature).
_SENTINEL_POOL = {"is_master": (bool,), "check_connection": (bool,)}
_CHECKED = (str, int, float, bool, bytes, type(None))


def _runtime_types(annotation: Any) -> tuple[type, ...] | None:
    """The runtime types an annotation allows, or None when it is not a simple one."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        parts: tuple[Any, ...] = typing.get_args(annotation)
    else:
        parts = (annotation,)
    allowed: list[type] = []
    for part in parts:
        if part not in _CHECKED:
            return None  # object, classes, generics, string annotations: not checked
        allowed.extend((float, int) if part is float else (part,))
    return tuple(allowed)


def _accepted(*classes: type) -> dict[str, tuple[type, ...] | None]:
    """Keyword arguments the classes' ``__init__`` accept (following ``**kwargs`` up the MRO)."""
    options: dict[str, tuple[type, ...] | None] = {}
    for cls in classes:
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            params = inspect.signature(init).parameters.values()
            named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for param in params:
                if param.name != "self" and param.kind in named:
                    options.setdefault(param.name, _runtime_types(param.annotation))
            if not any(param.kind is param.VAR_KEYWORD for param in params):
                break  # this __init__ passes nothing further up
    return options


def _option_error(name: str, value: Any, options: dict[str, Any], owner: str) -> str | None:
    if name not in options:
        tls = "; for TLS use a rediss:// address" if name.startswith("ssl") else ""
        return f"unknown connection option {name!r} ({owner} does not accept it{tls})"
    allowed = options[name]
    if allowed is None or (
        isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    ):
        return None
    names = {"float": "a number", "int": "an integer", "str": "a string", "bool": "a bool",
             "bytes": "bytes", "NoneType": "None"}  # fmt: skip
    kinds = [names[kind.__name__] for kind in allowed if not (kind is int and float in allowed)]
    return f"connection option {name!r} must be {' or '.join(kinds)}, got {value!r}"


def _host_errors(host: dict[str, Any]) -> list[str]:
    try:
        pool = create_pool(host)  # no I/O: parses the URL and builds the pool object
    except (TypeError, ValueError) as exc:
        return [str(exc)]
    options = _accepted(pool.connection_class, type(pool))
    if "master_name" in host:
        options.update(_SENTINEL_POOL)
    given = {key: value for key, value in host.items() if key not in _STRUCTURAL}
    if isinstance(host.get("address"), str):
        given.update(parse_url(host["address"]))
    owner = f"redis-py's {pool.connection_class.__name__}"
    errors = [_option_error(name, value, options, owner) for name, value in given.items()]
    sentinel_kwargs = host.get("sentinel_kwargs") or {}
    if isinstance(sentinel_kwargs, dict):
        client = _accepted(AsyncRedis)
        errors += [_option_error(name, value, client, "redis-py's Redis client (for sentinels)")
                   for name, value in sentinel_kwargs.items()]  # fmt: skip
    return [error for error in errors if error]


def connection_option_errors(hosts: Sequence[Any] | None) -> list[str]:
    """Every unknown or wrongly typed connection option in ``CONFIG['hosts']``, as messages.

    Checked against the signatures of the redis-py classes each entry's pool would use
    (URL query parameters included; ``sentinel_kwargs`` against the Redis client). No
    I/O. Entries that cannot be decoded at all are left to the layer's own checks.
    """
    try:
        decoded = decode_hosts(hosts)
    except ValueError:
        return []
    errors = []
    for index, host in enumerate(decoded):
        if not isinstance(host, dict) or ("master_name" in host) != ("sentinels" in host):
            continue
        errors += [f"CONFIG['hosts'][{index}]: {error}" for error in _host_errors(host)]
    return errors


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
    failover_timeout: float,
    max_connections: int = 100,
    pool_timeout: float = 5.0,
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
        failover_timeout=_positive("failover_timeout", failover_timeout),
        max_connections=_positive("max_connections", max_connections, integer=True),
        pool_timeout=_positive("pool_timeout", pool_timeout),
    )
