"""The example project with ``WS4REDIS_CONNECTION`` on Redis Sentinel.

The ``redis+sentinel://`` URL comes from ``WS4REDIS_TEST_SENTINEL_URL`` (set by
``tests/integration/test_sentinel.py``); sessions stay on the session's plain test Redis.
"""

import os

from chatserver.settings import *  # noqa: F403

WS4REDIS_CONNECTION = os.environ["WS4REDIS_TEST_SENTINEL_URL"]
