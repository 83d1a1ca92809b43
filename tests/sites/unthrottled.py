"""The example project without the per-connection message rate limit.

The conformance cases send bursts of up to 1000 messages to measure the codec and the
loop; the rate limit itself is tested one unit over in ``tests/integration/test_limits.py``.
"""

from chatserver.settings import *  # noqa: F403

WS4REDIS_MAX_MESSAGES_PER_SECOND = None
