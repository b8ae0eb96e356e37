"""Every exception broadcast_layer raises.

Hierarchy::

    BroadcastLayerError
    ├── ConfigurationError (also ValueError)   bad CONFIG at construction
    ├── EmbeddedRedisError                      no redis-server, or it would not start
    └── RedisUnavailable                        Redis could not be reached; nothing was sent

Where the Channels specification names an exception, that one is raised instead:
``channels.exceptions.ChannelFull`` when a channel is at capacity and
``channels.exceptions.MessageTooLarge`` when a message exceeds ``max_message_size``.
Invalid channel or group names raise ``TypeError`` and non-dict messages
``TypeError`` too, as Channels' own layers do.
"""

from __future__ import annotations

from channels.exceptions import ChannelFull, MessageTooLarge

__all__ = [
    "BroadcastLayerError",
    "ChannelFull",
    "ConfigurationError",
    "EmbeddedRedisError",
    "MessageTooLarge",
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
