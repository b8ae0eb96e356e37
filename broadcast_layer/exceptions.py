"""Every exception broadcast_layer raises.

Hierarchy::

    BroadcastLayerError
    ├── ConfigurationError (also ValueError)   bad CONFIG at construction
    ├── EmbeddedRedisError                      no redis-server, or it would not start
    ├── RedisUnavailable                        Redis could not be reached (see below)
    │   └── PoolExhausted                       no pooled connection came free in pool_timeout
    ├── InvalidName (also TypeError)            a group or channel name breaks the name rules
    ├── InvalidMessage (also TypeError)         not a dict, or not serializable
    │   └── MessageTooDeep                      containers nested deeper than MAX_NESTING
    ├── InvalidMessageType (also ValueError)    not a handler name, or a refused protocol type
    ├── InvalidPattern (also ValueError)        a malformed room glob, or one over the limits
    ├── HistoryNotEnabled (also ValueError)     group_history() of a group CONFIG["history"] skips
    └── InvalidHistoryQuery (also ValueError)   group_history()'s since or limit out of bounds

``RedisUnavailable`` means the call failed for a connection reason after the retries
that are safe. Whether a write was applied depends on the call: docs/reliability.md
("Dropped connections and retries") states it for each one.

Where the Channels specification names an exception, that one is raised instead:
``channels.exceptions.ChannelFull`` when a channel is at capacity and
``channels.exceptions.MessageTooLarge`` when a message exceeds ``max_message_size``.
Invalid names and messages are ``TypeError`` subclasses, as Channels' own layers raise
``TypeError`` for them. The rules and their limits are in
``broadcast_layer._protocol.validation`` and ``broadcast_layer._protocol.globs``
(docs/limits.md).
"""

from __future__ import annotations

from channels.exceptions import ChannelFull, MessageTooLarge

__all__ = [
    "BroadcastLayerError",
    "ChannelFull",
    "ConfigurationError",
    "EmbeddedRedisError",
    "HistoryNotEnabled",
    "InvalidHistoryQuery",
    "InvalidMessage",
    "InvalidMessageType",
    "InvalidName",
    "InvalidPattern",
    "MessageTooDeep",
    "MessageTooLarge",
    "PoolExhausted",
    "RedisUnavailable",
]


class BroadcastLayerError(Exception):
    """Base class of this package's own exceptions."""


class ConfigurationError(BroadcastLayerError, ValueError):
    """The layer's ``CONFIG`` is invalid; the message names the key."""


class EmbeddedRedisError(BroadcastLayerError):
    """No ``redis-server`` binary was found, or it failed to start."""


class RedisUnavailable(BroadcastLayerError, ConnectionError):
    """Redis could not be reached (the redis-py error is chained as ``__cause__``)."""


class PoolExhausted(RedisUnavailable):
    """Every connection of a host's pool stayed in use for ``pool_timeout`` seconds.

    Redis itself may be fine: the process ran more concurrent commands than
    ``max_connections`` allows for longer than the wait. Nothing was sent. Raise
    ``max_connections`` or ``pool_timeout`` in ``CONFIG`` (or the host entry's own
    ``max_connections``).
    """


class InvalidName(BroadcastLayerError, TypeError):
    """A group or channel name is not a string of the allowed characters under the length."""


class InvalidMessage(BroadcastLayerError, TypeError):
    """A message is not a dict, or the serializer cannot encode it."""


class MessageTooDeep(InvalidMessage):
    """A message nests dicts, lists or tuples deeper than ``validation.MAX_NESTING``."""


class InvalidMessageType(BroadcastLayerError, ValueError):
    """A message type is not a Channels handler name, or is a protocol type not allowed here."""


class InvalidPattern(BroadcastLayerError, ValueError):
    """A room glob is malformed, or longer or with more wildcards than the limits allow."""


class HistoryNotEnabled(BroadcastLayerError, ValueError):
    """The group matches no glob of ``CONFIG["history"]``, so it keeps no history."""


class InvalidHistoryQuery(BroadcastLayerError, ValueError):
    """A history query's ``since`` or ``limit`` is not an int within its bounds."""
