"""Django views for operations: the health probe as JSON, for load balancers and probes.

path("healthz", broadcast_layer.views.health),
path("healthz/other", broadcast_layer.views.health, {"alias": "other", "timeout": 1.0}),
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from .layer import get_layer


async def health(
    request: HttpRequest, alias: str = "default", timeout: float = 2.0
) -> JsonResponse:
    """200 with the probe's details when the layer's pub/sub round trip works, else 503.

    An async view: under an ASGI server it probes the server loop's own node (its pub/sub
    connection and read loop). Answers within ``timeout`` seconds whatever Redis does.
    """
    report = await get_layer(alias).health(timeout)
    response = JsonResponse(report.as_dict(), status=200 if report.ok else 503)
    response["Cache-Control"] = "no-store"
    return response
