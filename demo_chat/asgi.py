"""The ASGI entry point: Django for HTTP, the chat consumer for WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_chat.settings")
# Set Django up before importing anything that may touch models (auth, consumers).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from demo_chat.chat.routing import websocket_urlpatterns, worker_channels  # noqa: E402

# Daphne serves no static files, and the demo has no web server in front: Django serves
# the admin's CSS itself (in production, a web server or WhiteNoise would).
http_app = ASGIStaticFilesHandler(django_asgi_app)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        # Exact scheme://host:port origins, not "any port of an allowed host": another
        # site on this machine (another port) must not open chat sockets as its visitors.
        "websocket": OriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), settings.CHAT_ALLOWED_ORIGINS
        ),
        # `manage.py runworker chat-commands` (or `chat_worker`, which acknowledges each
        # command after answering it): the backend that answers /roll and /who.
        "channel": ChannelNameRouter(worker_channels),
    }
)
