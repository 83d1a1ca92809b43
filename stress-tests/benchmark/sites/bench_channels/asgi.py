"""``uvicorn bench_channels.asgi:application`` / ``daphne bench_channels.asgi:application``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_channels.settings")

import django  # noqa: E402

django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench_channels.consumers import BroadcastConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("ws/bench", BroadcastConsumer.as_asgi())])}
)
