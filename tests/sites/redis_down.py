"""The example project pointed at a Redis that does not exist (nothing listens on port 1)."""

from chatserver.settings import *  # noqa: F403

DEAD_REDIS = "redis://127.0.0.1:1/0"
WS4REDIS_CONNECTION = DEAD_REDIS
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": DEAD_REDIS,
    }
}
