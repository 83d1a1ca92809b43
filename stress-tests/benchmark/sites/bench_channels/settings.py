"""Settings of the Channels peer; ``BENCH_CHANNEL_LAYER`` picks the Redis layer.

``pubsub``: ``channels_redis.pubsub.RedisPubSubChannelLayer`` (run under uvicorn);
``core``: ``channels_redis.core.RedisChannelLayer`` (run under daphne).  Both with their
default options, as a project would start with them.
"""

import os

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "channels"]
DATABASES = {}
USE_TZ = True
ROOT_URLCONF = "bench_channels.urls"
ASGI_APPLICATION = "bench_channels.asgi.application"

_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
_LAYERS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": _LAYERS[os.environ.get("BENCH_CHANNEL_LAYER", "pubsub")],
        "CONFIG": {"hosts": [_REDIS_URL]},
    }
}
