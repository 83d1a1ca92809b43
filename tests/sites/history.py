"""The example project with missed-message recovery on (``WS4REDIS_HISTORY``)."""

from chatserver.settings import *  # noqa: F403

#: Room for the 50 missed messages of the recovery test; the gap test publishes more.
WS4REDIS_HISTORY = {"size": 100, "ttl": 120}
