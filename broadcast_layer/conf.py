"""The layer's ``CONFIG``: one declaration per option, validated once into a :class:`LayerConfig`.

Each option is one field of :class:`LayerConfig` carrying an :class:`Option` (the keyword
argument's default and annotation, its validator, its row in docs/configuration.md).
The layer's keyword arguments, :func:`build_config`, the system check (which builds the
layer) and the docs table all follow from these fields; tests hold them equal.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from channels_redis.utils import create_pool, decode_hosts
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.connection import parse_url

from ._protocol.durable import MAX_CLAIM_AFTER, DurablePolicy
from ._protocol.globs import Glob, compile_glob
from ._protocol.history import MAX_HISTORY_SIZE, MAX_HISTORY_TTL, HistoryPolicy
from ._redis.pools import PoolLimits
from ._redis.retry import DEFAULT_BACKOFF, Backoff
from .exceptions import ConfigurationError, InvalidPattern

DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
#: ``CONFIG["prefix"]`` is 1 to this many characters from PREFIX_CHARACTERS.
MAX_PREFIX_LENGTH = 64
PREFIX_CHARACTERS = "ASCII letters, digits, '-', '_' and '.'"
# No ":" (the layer's own separator: with it, one prefix's keys could start with
# another's, e.g. "a" and "a:node"), no glob characters (flush's SCAN patterns), no
# braces (hash tags), no whitespace.
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]+")


# -- validators: each takes the key and the given value, returns the value to store -----


def _positive(name: str, value: Any, *, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigurationError(f"CONFIG[{name!r}] must be {kind}, got {value!r}")
    return value


def _positive_number(name: str, value: Any) -> Any:
    return _positive(name, value)


def _positive_integer(name: str, value: Any) -> Any:
    return _positive(name, value, integer=True)


def _prefix(name: str, prefix: Any) -> str:
    if (
        not isinstance(prefix, str)
        or len(prefix) > MAX_PREFIX_LENGTH
        or not _PREFIX.fullmatch(prefix)
    ):
        raise ConfigurationError(
            f"CONFIG[{name!r}] must be 1 to {MAX_PREFIX_LENGTH} {PREFIX_CHARACTERS}"
            f" (no ':', glob characters, braces or whitespace), got {prefix!r:.80}"
        )
    return prefix


def _encryption_keys(name: str, keys: Any) -> tuple[str | bytes, ...] | None:
    if isinstance(keys, (str, bytes)):
        raise ConfigurationError(f"CONFIG[{name!r}] must be a list of keys")
    return tuple(keys) if keys else None


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"CONFIG[{name!r}] must be True or False, got {value!r}")
    return value


def _as_given(name: str, value: Any) -> Any:
    """No check here: the layer refuses an unknown serializer_format when it builds one."""
    return value


def _channel_capacity(
    name: str, channel_capacity: Mapping[Any, int] | None
) -> tuple[tuple[re.Pattern[str], int], ...]:
    if not channel_capacity:
        return ()
    if not isinstance(channel_capacity, Mapping):
        raise ConfigurationError(f"CONFIG[{name!r}] must be a dict of pattern: capacity")
    compiled = []
    for pattern, capacity in channel_capacity.items():
        _positive(name, capacity, integer=True)
        if not isinstance(pattern, str) and not hasattr(pattern, "match"):
            raise ConfigurationError(
                f"CONFIG[{name!r}] keys must be globs or regexes, got {pattern!r}"
            )
        regex = pattern if hasattr(pattern, "match") else re.compile(fnmatch.translate(pattern))
        compiled.append((regex, capacity))
    return tuple(compiled)


def _hosts(name: str, hosts: Sequence[Any] | None) -> tuple[dict[str, Any], ...]:
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


#: ``CONFIG["history"]`` (and ``durable_channels``) hold at most this many globs.
MAX_GLOBS = 100


def _globs(name: str, value: Any) -> list[tuple[Glob, Mapping[str, Any]]]:
    """The ``{glob: {setting: value}}`` dicts of history and durable_channels, checked."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"CONFIG[{name!r}] must be a dict of glob: settings")
    if len(value) > MAX_GLOBS:
        raise ConfigurationError(f"CONFIG[{name!r}] holds more than {MAX_GLOBS} globs")
    compiled = []
    for pattern, settings in value.items():
        try:
            glob = compile_glob(pattern)
        except InvalidPattern as exc:
            raise ConfigurationError(f"CONFIG[{name!r}]: {exc}") from None
        if not isinstance(settings, Mapping):
            raise ConfigurationError(f"CONFIG[{name!r}][{pattern!r}] must be a dict")
        compiled.append((glob, settings))
    return compiled


def _bounded(name: str, value: Any, maximum: float, *, integer: bool = False) -> Any:
    _positive(name, value, integer=integer)
    if value > maximum:
        raise ConfigurationError(f"CONFIG[{name!r}] must be at most {maximum}, got {value!r}")
    return value


def _history(name: str, value: Any) -> tuple[tuple[Glob, HistoryPolicy], ...]:
    if not value:
        return ()
    policies = []
    for glob, settings in _globs(name, value):
        where = f"{name}'][{glob.text!r}]['"
        if set(settings) != {"size", "ttl"}:
            raise ConfigurationError(
                f"CONFIG[{name!r}][{glob.text!r}] needs exactly 'size' and 'ttl',"
                f" got {sorted(map(str, settings))}"
            )
        size = _bounded(where + "size", settings["size"], MAX_HISTORY_SIZE, integer=True)
        ttl = _bounded(where + "ttl", settings["ttl"], MAX_HISTORY_TTL)
        policies.append((glob, HistoryPolicy(size, ttl)))
    return tuple(policies)


def _durable_channels(name: str, value: Any) -> tuple[tuple[Glob, DurablePolicy], ...]:
    if not value:
        return ()
    policies = []
    for glob, settings in _globs(name, value):
        if set(settings) != {"claim_after"}:
            raise ConfigurationError(
                f"CONFIG[{name!r}][{glob.text!r}] needs exactly 'claim_after',"
                f" got {sorted(map(str, settings))}"
            )
        where = f"{name}'][{glob.text!r}]['claim_after"
        policies.append(
            (glob, DurablePolicy(_bounded(where, settings["claim_after"], MAX_CLAIM_AFTER)))
        )
    return tuple(policies)


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


# -- the declaration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One ``CONFIG`` key as declared on its :class:`LayerConfig` field."""

    #: The keyword argument's default (what an absent key means).
    default: Any
    #: The keyword argument's annotation, as the layer's signature spells it.
    accepts: str
    #: Given value -> value to store; raises ConfigurationError naming the key.
    validate: Callable[[str, Any], Any]
    #: One line for the docs table: what the option sets.
    doc: str
    #: The docs table's "Type" column.
    kind: str
    #: How it compares with channels_redis (the docs table's last column).
    channels_redis: str = "**new**"
    #: The heading in docs/configuration.md that describes it (default: the key).
    section: str = ""
    #: The "Default" column when the default's repr would not say it (``None`` for hosts).
    shown_default: str = ""

    def default_text(self) -> str:
        """The "Default" column: ``"asgi"``, ``60``, none..."""
        if self.shown_default:
            return self.shown_default
        if self.default is None:
            return "none"
        text = json.dumps(self.default) if isinstance(self.default, str) else repr(self.default)
        return f"`{text}`"


def _option(**declaration: Any) -> Any:
    """A required :class:`LayerConfig` field declaring one ``CONFIG`` key."""
    return field(metadata={"option": Option(**declaration)})


_SECONDS = "number (s)"
_CAPACITY = "capacity-and-channel_capacity"
_POOL = "max_connections-and-pool_timeout"


@dataclass(frozen=True, kw_only=True)
class LayerConfig:
    """Validated layer options; each field with an :class:`Option` is a ``CONFIG`` key.

    Built by :func:`build_config`. The order of the fields is the order of the layer's
    keyword arguments and of the docs table.
    """

    hosts: tuple[dict[str, Any], ...] = _option(
        default=None, accepts="Sequence[Any] | None", validate=_hosts,
        doc="The Redis servers (URLs, `(host, port)` pairs, dicts, Sentinel)",
        kind="list of URL / `(host, port)` / dict", channels_redis="same",
        shown_default='`["redis://localhost:6379"]`',
    )  # fmt: skip
    cluster: bool = _option(
        default=False, accepts="bool", validate=_flag,
        doc="`hosts` are the startup nodes of one Redis Cluster (Redis 7+, sharded pub/sub)",
        kind="bool",
    )  # fmt: skip
    prefix: str = _option(
        default="asgi", accepts="str", validate=_prefix,
        doc="Starts every Redis key and pub/sub channel name", kind="str",
        channels_redis=f"same meaning; 1 to {MAX_PREFIX_LENGTH} of `[A-Za-z0-9_.-]` (no `:`)",
    )  # fmt: skip
    expiry: float = _option(
        default=60, accepts="float", validate=_positive_number,
        doc="Seconds a message may wait unread", kind=_SECONDS, channels_redis="same",
    )  # fmt: skip
    group_expiry: float = _option(
        default=86400, accepts="float", validate=_positive_number,
        doc="Seconds a membership lasts after its last `group_add`", kind=_SECONDS,
        channels_redis="same",
    )  # fmt: skip
    capacity: int = _option(
        default=100, accepts="int", validate=_positive_integer,
        doc="Messages that may wait on one channel", kind="int", section=_CAPACITY,
        channels_redis="same key, per channel (see below)",
    )  # fmt: skip
    channel_capacity: tuple[tuple[re.Pattern[str], int], ...] = _option(
        default=None, accepts="Mapping[Any, int] | None", validate=_channel_capacity,
        doc="`capacity` by channel name pattern", kind="dict pattern → int",
        section=_CAPACITY, channels_redis="same",
    )  # fmt: skip
    symmetric_encryption_keys: tuple[str | bytes, ...] | None = _option(
        default=None, accepts="Sequence[str | bytes] | None", validate=_encryption_keys,
        doc="Fernet keys: the first encrypts, every one decrypts", kind="list of str/bytes",
        channels_redis="same",
    )  # fmt: skip
    serializer_format: str = _option(
        default="msgpack", accepts="str", validate=_as_given,
        doc="How messages are serialized", kind="str", channels_redis="same",
    )  # fmt: skip
    max_message_size: int = _option(
        default=DEFAULT_MAX_MESSAGE_SIZE, accepts="int", validate=_positive_integer,
        doc="The largest serialized message", kind="int (bytes)",
        shown_default=f"`{DEFAULT_MAX_MESSAGE_SIZE}` (4 MiB)",
    )  # fmt: skip
    subscribe_timeout: float = _option(
        default=10.0, accepts="float", validate=_positive_number,
        doc="Seconds to wait for a SUBSCRIBE or another node's acknowledgement",
        kind=_SECONDS,
    )  # fmt: skip
    heartbeat_interval: float = _option(
        default=5.0, accepts="float", validate=_positive_number,
        doc="Seconds between a node's heartbeat ticks", kind=_SECONDS,
    )  # fmt: skip
    node_ttl: float = _option(
        default=15.0, accepts="float", validate=_positive_number,
        doc="Seconds after its last heartbeat when a node counts as dead", kind=_SECONDS,
    )  # fmt: skip
    failover_timeout: float = _option(
        default=10.0, accepts="float", validate=_positive_number,
        doc="Seconds calls wait for a Sentinel master while there is none", kind=_SECONDS,
    )  # fmt: skip
    max_connections: int = _option(
        default=100, accepts="int", validate=_positive_integer,
        doc="Command connections one pool opens", kind="int", section=_POOL,
        channels_redis="**new** (channels_redis: per host entry only)",
    )  # fmt: skip
    pool_timeout: float = _option(
        default=5.0, accepts="float", validate=_positive_number,
        doc="Seconds a call waits for a pool connection", kind=_SECONDS, section=_POOL,
    )  # fmt: skip
    history: tuple[tuple[Glob, HistoryPolicy], ...] = _option(
        default=None, accepts="Mapping[str, Mapping[str, float]] | None", validate=_history,
        doc="Groups that keep a replayable history: glob → `{\"size\": n, \"ttl\": s}`",
        kind="dict glob → dict",
    )  # fmt: skip
    durable_channels: tuple[tuple[Glob, DurablePolicy], ...] = _option(
        default=None, accepts="Mapping[str, Mapping[str, float]] | None",
        validate=_durable_channels, kind="dict glob → dict",
        doc="Normal channels kept in a stream until acknowledged: glob →"
        " `{\"claim_after\": s}`",
    )  # fmt: skip
    #: Not a CONFIG key: the pub/sub reconnect backoff (docs: "Fixed values").
    reconnect_backoff: Backoff = field(default=DEFAULT_BACKOFF)

    @property
    def pool_limits(self) -> PoolLimits:
        """The size of each command-connection pool and how long a caller waits for one."""
        return PoolLimits(self.max_connections, self.pool_timeout)

    def history_for(self, group: str) -> HistoryPolicy | None:
        """The history kept for ``group``: the first matching glob's, None when none matches."""
        for glob, policy in self.history:
            if glob.matches(group):
                return policy
        return None

    def durable_for(self, channel: str) -> DurablePolicy | None:
        """The policy of a durable normal channel; None for any other channel."""
        if "!" in channel:
            return None
        for glob, policy in self.durable_channels:
            if glob.matches(channel):
                return policy
        return None

    def capacity_for(self, channel: str) -> int:
        """The capacity of ``channel``: the first matching pattern's, else the default."""
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel):
                return capacity
        return self.capacity


#: Every ``CONFIG`` key and its declaration, in the order of the layer's keyword arguments.
OPTIONS: Mapping[str, Option] = types.MappingProxyType(
    {each.name: each.metadata["option"] for each in fields(LayerConfig) if each.metadata}
)


def build_config(config: Mapping[str, Any]) -> LayerConfig:
    """Validate ``CONFIG`` (absent keys take their defaults) into a :class:`LayerConfig`.

    Raises ``TypeError`` naming an unknown key and :class:`ConfigurationError` (a
    ``ValueError``) naming the key of a bad value. No I/O.
    """
    unknown = [key for key in config if key not in OPTIONS]
    if unknown:
        raise TypeError(f"unexpected CONFIG key {unknown[0]!r}")
    values = {
        name: option.validate(name, config.get(name, option.default))
        for name, option in OPTIONS.items()
    }
    if values["node_ttl"] <= values["heartbeat_interval"]:
        raise ConfigurationError(
            f"CONFIG['node_ttl'] ({values['node_ttl']}) must exceed heartbeat_interval"
            f" ({values['heartbeat_interval']})"
        )
    if values["cluster"] and any("master_name" in host for host in values["hosts"]):
        raise ConfigurationError(
            "CONFIG['hosts']: a cluster's hosts are its nodes' addresses, not Sentinel entries"
        )
    return LayerConfig(**values)


def markdown_table() -> str:
    """The table of keys in docs/configuration.md, as the declaration gives it."""
    rows = [
        "| Key | Type | Default | What it sets | New vs channels_redis |",
        "|---|---|---|---|---|",
    ]
    for name, option in OPTIONS.items():
        link = f"[`{name}`](#{option.section or name})"
        cells = (link, option.kind, option.default_text(), option.doc, option.channels_redis)
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows) + "\n"
