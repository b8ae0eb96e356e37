"""Django views for operations: the health probe as JSON, and Prometheus metrics.

In the project's URLconf (keep ``metrics`` off the public internet)::

    path("healthz", broadcast_layer.views.health),
    path("healthz/other", broadcast_layer.views.health, {"alias": "other", "timeout": 1.0}),
    path("metrics", broadcast_layer.views.metrics),
"""

from __future__ import annotations

import os

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

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


def metrics(request: HttpRequest) -> HttpResponse:
    """Every Prometheus metric of this process in the text format, or, when
    ``PROMETHEUS_MULTIPROC_DIR`` is set, of every worker process writing to that directory.

    404 when ``prometheus_client`` is not installed (the ``metrics`` extra).
    """
    try:
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            REGISTRY,
            CollectorRegistry,
            generate_latest,
            multiprocess,
        )
    except ImportError:
        raise Http404("prometheus_client is not installed (the metrics extra)") from None
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
