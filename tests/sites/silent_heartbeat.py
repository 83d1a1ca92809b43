"""The example project with heartbeats configured but, in practice, never sent by the server.

``WS4REDIS_HEARTBEAT`` is set, so the pages' clients send heartbeats and expect them back, while
the server would send its own only after an hour of idleness: a client watching for heartbeats
must give the connection up and reconnect.
"""

from chatserver.settings import *  # noqa: F403

WS4REDIS_HEARTBEAT = "--heartbeat--"
WS4REDIS_HEARTBEAT_INTERVAL = 3600
