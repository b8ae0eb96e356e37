"""broadcast_layer: a Redis channel layer for Django Channels built for many server processes.

Everything users import is here (see ``__all__``)::

    from broadcast_layer import Emitter, get_layer, get_registry

Settings name the layer class by its module path,
``broadcast_layer.layer.BroadcastChannelLayer``; the public modules (``layer``,
``registry``, ``emitter``, ``consumers``, ``exceptions``, ``acl``) keep their paths;
``admin`` and ``models`` are Django's to import (INSTALLED_APPS), never from here.
The underscore packages (``_node``, ``_protocol``, ``_redis``) are internal.
Importing this package needs no configured Django settings and starts nothing.
"""

from ._version import __version__
from .acl import acl_rules, acl_setuser
from .consumers import HistoryRecoveryMixin, NoPerMessageDatabaseCleanupMixin, RemoteControlMixin
from .emitter import AsyncEmitter, EmitResult, Emitter, all_group, user_group
from .exceptions import (
    BroadcastLayerError,
    ChannelFull,
    ConfigurationError,
    EmbeddedRedisError,
    HistoryNotEnabled,
    InvalidHistoryQuery,
    InvalidMessage,
    InvalidMessageType,
    InvalidName,
    InvalidPattern,
    MessageTooDeep,
    MessageTooLarge,
    PoolExhausted,
    RedisUnavailable,
)
from .layer import BroadcastChannelLayer, Health, HistoryMessage, HistoryPage, NodeStats, get_layer
from .registry import (
    ChannelInfo,
    Member,
    NodeInfo,
    Registry,
    Room,
    RoomPage,
    SyncRegistry,
    get_registry,
)

__all__ = [
    "AsyncEmitter",
    "BroadcastChannelLayer",
    "BroadcastLayerError",
    "ChannelFull",
    "ChannelInfo",
    "ConfigurationError",
    "EmbeddedRedisError",
    "EmitResult",
    "Emitter",
    "Health",
    "HistoryMessage",
    "HistoryNotEnabled",
    "HistoryPage",
    "HistoryRecoveryMixin",
    "InvalidHistoryQuery",
    "InvalidMessage",
    "InvalidMessageType",
    "InvalidName",
    "InvalidPattern",
    "Member",
    "MessageTooDeep",
    "MessageTooLarge",
    "NoPerMessageDatabaseCleanupMixin",
    "NodeInfo",
    "NodeStats",
    "PoolExhausted",
    "RedisUnavailable",
    "Registry",
    "RemoteControlMixin",
    "Room",
    "RoomPage",
    "SyncRegistry",
    "__version__",
    "acl_rules",
    "acl_setuser",
    "all_group",
    "get_layer",
    "get_registry",
    "user_group",
]
