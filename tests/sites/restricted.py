"""The example project refusing anonymous users, with the callback of the spec's safety section."""

from chatserver.settings import *  # noqa: F403
from django.core.exceptions import PermissionDenied

WS4REDIS_ALLOWED_CHANNELS = "tests.sites.restricted.get_allowed_channels"


def get_allowed_channels(request, channels):  # noqa: ANN001, ANN201
    """Refuse anonymous users; authenticated users keep every channel they asked for."""
    if not request.user.is_authenticated:
        raise PermissionDenied("Not allowed to subscribe nor to publish on the Websocket!")
