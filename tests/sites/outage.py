"""The example project for the Redis outage tests: a heartbeat after each second of idleness.

The Redis server still comes from ``CHATSERVER_REDIS_URL`` (``chatserver.settings``): each outage
test gives its uWSGI a Redis of its own, kills it and starts it again on the same port.  With
the heartbeat at 1 s instead of 4 s, every client must see several heartbeats during the
shortest outage (5 s), which shows that the WebSockets keep being served while Redis is gone.
"""

from chatserver.settings import *  # noqa: F403

WS4REDIS_HEARTBEAT = "--heartbeat--"
WS4REDIS_HEARTBEAT_INTERVAL = 1.0
