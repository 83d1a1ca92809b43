"""The example project with ``WS4REDIS_CONNECTION`` on a Redis Cluster (sharded pub/sub).

The ``redis+cluster://`` URL comes from ``WS4REDIS_TEST_CLUSTER_URL`` (set by
``tests/integration/test_cluster.py``); sessions stay on the session's plain test Redis.
"""

import os

from chatserver.settings import *  # noqa: F403

WS4REDIS_CONNECTION = os.environ["WS4REDIS_TEST_CLUSTER_URL"]
