"""An ASGI application for end-to-end tests: WebSocket consumers served by real Daphne.

``python -m daphne tests.asgi:application`` with ``DJANGO_SETTINGS_MODULE=tests.settings``
(the e2e ``daphne`` fixture's ``app=`` argument).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the consumers import

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from tests.consumers import CrashingConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/crash/<str:room>/", CrashingConsumer.as_asgi())]),
    }
)
