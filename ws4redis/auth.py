"""Who is on the other end of a WebSocket, found without touching the database.

At login (Django's ``user_logged_in`` signal) :func:`store_user_in_session` keeps the user's
name, group names and staff flags in the session.  In the WebSocket loop,
:func:`default_process_request` loads the session from its cookie and builds a
:class:`SessionUser` from those keys, so no blocking database query runs inside the loop.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any

from django.conf import settings as django_settings
from django.http import HttpRequest

from ws4redis.redis_store import SESSION_GROUPS_KEY, SESSION_USERNAME_KEY

logger = logging.getLogger("ws4redis")

SESSION_USER_ID_KEY = "_auth_user_id"  # django.contrib.auth.SESSION_KEY
SESSION_FLAGS_KEY = "ws4redis:flags"


class SessionUser:
    """The logged-in user as far as the WebSocket loop needs to know, built from the session.

    It answers what allowed-channels callbacks usually ask (``is_authenticated``,
    ``get_username()``, ``is_staff``, ``is_superuser``, ``group_names``) without a query.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, pk: Any, username: str, groups: list[str], flags: dict[str, bool]) -> None:
        self.pk = self.id = pk
        self.username = username
        self.group_names = list(groups)
        self.is_staff = bool(flags.get("is_staff"))
        self.is_superuser = bool(flags.get("is_superuser"))

    def get_username(self) -> str:
        """The user's username, as Django's user model returns it."""
        return self.username

    def __str__(self) -> str:
        return self.username

    def __repr__(self) -> str:
        return f"<SessionUser {self.username!r}>"


def session_user(session: Any) -> Any:
    """The :class:`SessionUser` stored in ``session`` at login, or an ``AnonymousUser``."""
    from django.contrib.auth.models import AnonymousUser

    user_id = session.get(SESSION_USER_ID_KEY)
    username = session.get(SESSION_USERNAME_KEY)
    if user_id is None or username is None:
        if user_id is not None:
            logger.info(
                "Session of user %s has no ws4redis data (logged in before ws4redis was "
                "installed?); treated as anonymous until the next login",
                user_id,
            )
        return AnonymousUser()
    groups = session.get(SESSION_GROUPS_KEY) or []
    return SessionUser(user_id, username, groups, session.get(SESSION_FLAGS_KEY) or {})


def default_process_request(request: HttpRequest) -> None:
    """Attach ``request.session`` (from the session cookie) and ``request.user``."""
    engine = import_module(django_settings.SESSION_ENGINE)
    session_key = request.COOKIES.get(django_settings.SESSION_COOKIE_NAME)
    request.session = engine.SessionStore(session_key)
    request.user = session_user(request.session)


def store_user_in_session(
    sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any
) -> None:
    """``user_logged_in`` handler: keep what the WebSocket loop needs in the session."""
    if request is None or not hasattr(request, "session"):
        return
    request.session[SESSION_USERNAME_KEY] = user.get_username()
    request.session[SESSION_GROUPS_KEY] = list(user.groups.values_list("name", flat=True))
    request.session[SESSION_FLAGS_KEY] = {
        "is_staff": bool(getattr(user, "is_staff", False)),
        "is_superuser": bool(getattr(user, "is_superuser", False)),
    }
