"""Django system checks for CHANNEL_LAYERS entries that use this layer.

IDs are stable and documented in docs/configuration.md. Only W002 and W003 touch the network,
and only when asked: ``manage.py check --deploy`` with ``BROADCAST_LAYER_CHECK_REDIS``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from redis.exceptions import RedisClusterException, RedisError

from ._redis.clients import cluster_versions
from .conf import LayerConfig, connection_option_errors

BACKEND = "broadcast_layer.layer.BroadcastChannelLayer"


def _our_layers() -> Iterator[tuple[str, dict[str, Any]]]:
    for alias, entry in getattr(settings, "CHANNEL_LAYERS", {}).items():
        if isinstance(entry, dict) and entry.get("BACKEND") == BACKEND:
            yield alias, entry.get("CONFIG", {})


def _build(config: dict[str, Any]) -> Any:
    from .layer import BroadcastChannelLayer

    return BroadcastChannelLayer(**config)


@register(Tags.compatibility)
def check_config(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E001: CONFIG is invalid. E003: a hosts entry has an unknown or mistyped connection
    option. W001: no hosts given, so localhost:6379 is assumed."""
    messages: list[CheckMessage] = []
    for alias, config in _our_layers():
        if not isinstance(config, dict):
            messages.append(
                Error(
                    f"CHANNEL_LAYERS[{alias!r}]['CONFIG'] must be a dict.",
                    hint="See docs/configuration.md.",
                    id="broadcast_layer.E001",
                )
            )
            continue
        host_errors = connection_option_errors(config.get("hosts"))
        messages.extend(
            Error(
                f"CHANNEL_LAYERS[{alias!r}]: {error}.",
                hint="Correct the option's name or type; a hosts entry takes the arguments "
                "of redis-py's connection classes (docs/configuration.md#hosts).",
                id="broadcast_layer.E003",
            )
            for error in host_errors
        )
        if host_errors:
            continue  # building the layer would only repeat them as E001
        try:
            _build(config)
        except (TypeError, ValueError) as exc:
            messages.append(
                Error(
                    f"CHANNEL_LAYERS[{alias!r}]['CONFIG'] is invalid: {exc}",
                    hint="Fix or remove the key; every key is listed in docs/configuration.md.",
                    id="broadcast_layer.E001",
                )
            )
            continue
        if not config.get("hosts"):
            messages.append(
                Warning(
                    f"CHANNEL_LAYERS[{alias!r}] has no 'hosts'; redis://localhost:6379 is used.",
                    hint='Set CONFIG["hosts"], e.g. ["redis://127.0.0.1:6379/0"].',
                    id="broadcast_layer.W001",
                )
            )
    return messages


@register(Tags.compatibility, deploy=True)
def check_redis_reachable(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W002 (``check --deploy`` with ``BROADCAST_LAYER_CHECK_REDIS = True`` only): a
    configured Redis host does not answer PING (with ``cluster``: no startup node
    answers), and W003: a cluster master is older than Redis 7. Off by default, so a
    build without Redis passes; warnings, never errors."""
    if not getattr(settings, "BROADCAST_LAYER_CHECK_REDIS", False):
        return []
    from asgiref.sync import async_to_sync

    messages: list[CheckMessage] = []
    for alias, config in _our_layers():
        try:
            layer = _build(config)
        except (TypeError, ValueError):
            continue  # reported by E001
        if layer.config.cluster:
            messages += _check_cluster(alias, layer.config)
            continue
        try:
            async_to_sync(layer.ping)()
        except ConnectionError as exc:
            messages.append(
                Warning(
                    f"CHANNEL_LAYERS[{alias!r}]: Redis is unreachable ({exc}).",
                    hint="Start Redis or correct CONFIG['hosts']; unset "
                    "BROADCAST_LAYER_CHECK_REDIS where no Redis is expected (a build).",
                    id="broadcast_layer.W002",
                )
            )
    return messages


#: The first Redis with sharded pub/sub (SSUBSCRIBE/SPUBLISH).
CLUSTER_MIN_VERSION = (7, 0)


def _check_cluster(alias: str, config: LayerConfig) -> list[CheckMessage]:
    """W002 for a cluster no startup node answers; W003 for a master older than Redis 7."""
    from asgiref.sync import async_to_sync

    try:
        versions = async_to_sync(cluster_versions)(config.hosts)
    except (RedisError, RedisClusterException, OSError) as exc:
        return [
            Warning(
                f"CHANNEL_LAYERS[{alias!r}]: the Redis Cluster is unreachable ({exc}).",
                hint="Start the cluster or correct CONFIG['hosts'] (its startup nodes); unset "
                "BROADCAST_LAYER_CHECK_REDIS where no Redis is expected (a build).",
                id="broadcast_layer.W002",
            )
        ]
    old = too_old(versions)
    if not old:
        return []
    return [
        Warning(
            f"CHANNEL_LAYERS[{alias!r}]: cluster masters older than Redis 7: {', '.join(old)}.",
            hint="CONFIG['cluster'] needs sharded pub/sub (SSUBSCRIBE/SPUBLISH), new in "
            "Redis 7.0: upgrade the cluster (docs/cluster.md).",
            id="broadcast_layer.W003",
        )
    ]


def too_old(versions: dict[str, str]) -> list[str]:
    """``"name (version)"`` of each master older than :data:`CLUSTER_MIN_VERSION`, sorted."""
    return sorted(
        f"{name} ({version})"
        for name, version in versions.items()
        if tuple(int(part) for part in version.split(".")[:2]) < CLUSTER_MIN_VERSION
    )
