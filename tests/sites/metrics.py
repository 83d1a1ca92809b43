"""The example project reporting its metrics every half second, with the Prometheus view.

Its own ``WS4REDIS_PREFIX`` keeps its reports apart from those of the other test servers that
share the session's Redis; messages of 1 KiB at most make the 1009 limit cheap to reach.
"""

from chatserver.settings import *  # noqa: F403

ROOT_URLCONF = "tests.sites.metrics_urls"
WS4REDIS_PREFIX = "metrics"
WS4REDIS_METRICS_INTERVAL = 0.5
WS4REDIS_METRICS_TOKEN = "metrics-test-token"
WS4REDIS_MAX_MESSAGE_SIZE = 1024
