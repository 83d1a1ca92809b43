"""The Redis Cluster site (``tests/sites/cluster.py``) with missed-message recovery on."""

from tests.sites.cluster import *  # noqa: F403

WS4REDIS_HISTORY = {"size": 100, "ttl": 120}
