"""The example project with a short outgoing queue: 30 messages per WebSocket, not 1000.

At the slow-consumer test's 10 messages a second, a client that stopped reading overflows it
three seconds after its socket buffers are full, while a healthy client, a message or two
behind at worst, stays far below it.
"""

from chatserver.settings import *  # noqa: F403

WS4REDIS_SEND_QUEUE_SIZE = 30
