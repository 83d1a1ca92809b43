"""The example project with small abuse limits, so that one unit over each is quick to reach.

10 messages a second per connection (bursts of 20), 5 WebSockets per worker, 2 seconds for a
request head under ``runserver``.
"""

from chatserver.settings import *  # noqa: F403

WS4REDIS_MAX_MESSAGES_PER_SECOND = 10
WS4REDIS_MAX_CONNECTIONS = 5
WS4REDIS_HANDSHAKE_TIMEOUT = 2
