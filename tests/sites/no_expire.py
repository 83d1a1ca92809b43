"""The example project with ``WS4REDIS_EXPIRE = None``: messages are never persisted."""

from chatserver.settings import *  # noqa: F403

WS4REDIS_EXPIRE = None
