"""The example project with a ``WS4REDIS_PROCESS_REQUEST`` hook (given as a dotted path).

The hook runs the default processing (session and user from the cookie), then refuses any
request carrying ``X-Refuse-Me`` with ``PermissionDenied`` and lets ``X-Facility-Tag`` rename
the request's facility, so a test can see that the hook ran before the channels were built.
"""

from chatserver.settings import *  # noqa: F403
from django.core.exceptions import PermissionDenied

WS4REDIS_PROCESS_REQUEST = "tests.sites.process_request.process_request"


def process_request(request):  # noqa: ANN001, ANN201
    """Attach session and user, then apply the test's two headers."""
    from ws4redis.auth import default_process_request

    default_process_request(request)
    if "HTTP_X_REFUSE_ME" in request.META:
        raise PermissionDenied("refused by the process-request hook")
    tag = request.META.get("HTTP_X_FACILITY_TAG")
    if tag:
        request.path_info = f"{request.path_info}-{tag}"
