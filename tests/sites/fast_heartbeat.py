"""The example project sending its heartbeat after half a second of idleness (not 4 s)."""

from chatserver.settings import *  # noqa: F403

WS4REDIS_HEARTBEAT = "--heartbeat--"
WS4REDIS_HEARTBEAT_INTERVAL = 0.5
