"""The layer configured as ``CHANNEL_LAYERS[alias]``, for ``get_layer`` and ``get_registry``.

Below both ``layer.py`` and ``registry.py``, so the registry finds a layer's queries
without importing the layer.
"""

from __future__ import annotations

from typing import Any

from channels.layers import channel_layers


def configured(alias: str) -> Any:
    """``channel_layers[alias]``; raises ``ValueError`` when the alias is not configured."""
    if alias not in channel_layers:
        raise ValueError(f"No channel layer {alias!r} in CHANNEL_LAYERS")
    return channel_layers[alias]


def not_ours(alias: str, layer: object) -> ValueError:
    """The error for an alias whose layer is not a BroadcastChannelLayer."""
    return ValueError(
        f"CHANNEL_LAYERS[{alias!r}] is {type(layer).__name__}, not BroadcastChannelLayer"
    )
