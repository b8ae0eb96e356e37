"""broadcast_layer: a Redis channel layer for Django Channels built for many server processes."""

from .exceptions import (
    BroadcastLayerError,
    ChannelFull,
    ConfigurationError,
    EmbeddedRedisError,
    InvalidMessage,
    InvalidMessageType,
    InvalidName,
    InvalidPattern,
    MessageTooDeep,
    MessageTooLarge,
    PoolExhausted,
    RedisUnavailable,
)

__version__ = "0.1.0"

__all__ = [
    "BroadcastLayerError",
    "ChannelFull",
    "ConfigurationError",
    "EmbeddedRedisError",
    "InvalidMessage",
    "InvalidMessageType",
    "InvalidName",
    "InvalidPattern",
    "MessageTooDeep",
    "MessageTooLarge",
    "PoolExhausted",
    "RedisUnavailable",
    "__version__",
]
