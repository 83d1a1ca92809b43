"""``RedisPublisher``: how Django views push messages to WebSocket clients."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ws4redis import settings
from ws4redis.redis_store import (
    AUDIENCES,
    RedisMessage,
    RedisStore,
    audience_channels,
    channel_key,
    request_groups,
    request_session_key,
    request_username,
)

if TYPE_CHECKING:
    import redis
    from django.http import HttpRequest

FETCH_AUDIENCES = (*AUDIENCES, "any")


class RedisPublisher(RedisStore):
    """Publish messages for a facility to its broadcast, user, group and session audiences.

    ``users``, ``groups`` and ``sessions`` are lists of names (a single name is accepted too);
    the magic item :data:`~ws4redis.redis_store.SELF` stands for the ``request``'s own user, the
    groups that user belongs to, or its session.  Example::

        RedisPublisher(facility="foobar", users=["john", SELF], request=request)
    """

    def __init__(
        self,
        *,
        facility: str = "",
        broadcast: bool = False,
        users: Any = (),
        groups: Any = (),
        sessions: Any = (),
        request: HttpRequest | None = None,
        connection: redis.Redis | None = None,
    ) -> None:
        super().__init__(connection)
        self._publishers = audience_channels(
            facility,
            broadcast=broadcast,
            users=users,
            groups=groups,
            sessions=sessions,
            request=request,
        )

    def fetch_message(
        self, request: HttpRequest, facility: str, audience: str = "any"
    ) -> RedisMessage | None:
        """Return the persisted message for ``facility`` and ``audience``, or ``None``.

        ``audience`` is ``broadcast``, ``group``, ``user``, ``session`` or ``any`` (which looks in
        that order: session, user, group, broadcast); the first message found is returned.
        """
        if audience not in FETCH_AUDIENCES:
            raise ValueError(
                f"audience must be one of {', '.join(FETCH_AUDIENCES)}, not {audience!r}"
            )
        for key in _fetch_keys(request, facility, audience):
            value = self._connection.get(key)
            if value is not None:
                return RedisMessage(value)
        return None


def _fetch_keys(request: HttpRequest, facility: str, audience: str) -> list[str]:
    prefix = settings.get("WS4REDIS_PREFIX")
    session_key = request_session_key(request)
    username = request_username(request)
    candidates = {
        "session": [channel_key("session", facility, session_key, prefix)] if session_key else [],
        "user": [channel_key("user", facility, username, prefix)] if username else [],
        "group": [channel_key("group", facility, g, prefix) for g in request_groups(request)],
        "broadcast": [channel_key("broadcast", facility, prefix=prefix)],
    }
    order = ("session", "user", "group", "broadcast") if audience == "any" else (audience,)
    return [key for name in order for key in candidates[name]]
