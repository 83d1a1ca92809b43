"""Messages, channel keys and publishing: what the Django loop and the WebSocket loop share.

A message published for a *facility* goes to one Redis channel per audience::

    [PREFIX:]broadcast:FACILITY
    [PREFIX:]user:USERNAME:FACILITY
    [PREFIX:]group:GROUP:FACILITY
    [PREFIX:]session:SESSION_KEY:FACILITY

and, when it is persisted (``WS4REDIS_EXPIRE`` > 0), its latest copy is kept under the same key
with ``SET … EX`` so that clients connecting later receive it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ws4redis import settings
from ws4redis.history import queue_publish

if TYPE_CHECKING:
    import redis
    from django.http import HttpRequest

logger = logging.getLogger("ws4redis")

AUDIENCES = ("broadcast", "user", "group", "session")
#: Session keys kept by the login signal handler so the WebSocket loop needs no database.
SESSION_USERNAME_KEY = "ws4redis:username"
SESSION_GROUPS_KEY = "ws4redis:memberof"


class _Self:
    """The magic audience item that stands for the requesting user, group or session."""

    def __repr__(self) -> str:
        return "SELF"


#: Put ``SELF`` into ``users``, ``groups`` or ``sessions`` to address the request's own.
SELF = _Self()


class RedisMessage(bytes):
    """A message as bytes: built from ``str``, ``bytes`` or a pub/sub response list.

    The heartbeat string (``WS4REDIS_HEARTBEAT``) is not a message: building a ``RedisMessage``
    from it, or from a pub/sub response that is not a ``message``, returns ``None``.
    """

    def __new__(cls, value: str | bytes | list[Any] | tuple[Any, ...]) -> RedisMessage:  # type: ignore[misc]
        if isinstance(value, (list, tuple)):
            if len(value) < 3 or _as_bytes(value[0]) not in (b"message", b"smessage"):
                return None  # type: ignore[return-value]
            value = value[2]
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"A RedisMessage is built from str or bytes, not {type(value).__name__}"
            )
        if is_heartbeat(value):
            return None  # type: ignore[return-value]
        return super().__new__(cls, value)


def _as_bytes(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def is_heartbeat(payload: bytes | bytearray | memoryview) -> bool:
    """Whether ``payload`` is the configured heartbeat string."""
    heartbeat = settings.get("WS4REDIS_HEARTBEAT")
    return heartbeat is not None and payload == heartbeat.encode("utf-8")


def channel_key(audience: str, facility: str, name: str | None = None, prefix: str = "") -> str:
    """Build the Redis key of one channel, e.g. ``channel_key("user", "chat", "john")``."""
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {', '.join(AUDIENCES)}, not {audience!r}")
    if (audience == "broadcast") != (name is None):
        raise ValueError(f"audience {audience!r} {'takes no' if name is None else 'needs a'} name")
    parts = [prefix] if prefix else []
    parts.append(audience)
    if name is not None:
        parts.append(str(name))
    parts.append(facility)
    return ":".join(parts)


def _names(argument: str, values: Any) -> list[Any]:
    if values is None:
        return []
    if isinstance(values, (str, _Self)):
        return [values]
    try:
        return list(values)
    except TypeError:
        raise TypeError(
            f"{argument} must be a list of names (SELF allowed), not {type(values).__name__}"
        ) from None


def request_username(request: HttpRequest | None) -> str | None:
    """The username of the request's authenticated user, or ``None``."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return user.get_username()


def request_groups(request: HttpRequest | None) -> list[str]:
    """The names of the user's groups, as stored in the session at login."""
    session = getattr(request, "session", None)
    if session is None or request_username(request) is None:
        return []
    return list(session.get(SESSION_GROUPS_KEY) or [])


def request_session_key(request: HttpRequest | None) -> str | None:
    """The request's session key, or ``None`` when it has no session yet."""
    session = getattr(request, "session", None)
    return getattr(session, "session_key", None) if session is not None else None


def _resolve(values: list[Any], own: list[str]) -> list[str]:
    resolved: list[str] = []
    for value in values:
        for name in own if value is SELF else [value]:
            if name and str(name) not in resolved:
                resolved.append(str(name))
    return resolved


def audience_channels(
    facility: str,
    *,
    broadcast: bool = False,
    users: Any = (),
    groups: Any = (),
    sessions: Any = (),
    request: HttpRequest | None = None,
    prefix: str | None = None,
) -> list[str]:
    """The channel keys of ``facility`` for the given audiences; ``SELF`` uses ``request``.

    ``SELF`` resolves to nothing when the request has no such thing (an anonymous user, no
    session): it never becomes a channel shared by strangers.
    """
    if prefix is None:
        prefix = settings.get("WS4REDIS_PREFIX")
    username = request_username(request)
    session_key = request_session_key(request)
    wanted = (
        ("user", _resolve(_names("users", users), [username] if username else [])),
        ("group", _resolve(_names("groups", groups), request_groups(request))),
        ("session", _resolve(_names("sessions", sessions), [session_key] if session_key else [])),
    )
    keys = [channel_key("broadcast", facility, prefix=prefix)] if broadcast else []
    for audience, names in wanted:
        keys.extend(channel_key(audience, facility, name, prefix) for name in names)
    return keys


class RedisStore:
    """Publishes messages to a set of Redis channels and keeps their persisted copies."""

    def __init__(self, connection: redis.Redis | None = None) -> None:
        from ws4redis.connection import get_redis_client, is_cluster

        if connection is None:
            connection = get_redis_client()
        self._connection = connection
        #: A Redis Cluster: publish with SPUBLISH (sharded pub/sub), read keys slot by slot.
        self._sharded = is_cluster(connection)
        self._publishers: list[str] = []

    @property
    def publish_channels(self) -> list[str]:
        """The channel keys this store publishes on."""
        return list(self._publishers)

    def publish_message(
        self, message: RedisMessage | str | bytes | None, expire: int | None = None
    ) -> int:
        """Publish ``message`` on every channel of this store, in one round trip to Redis.

        In a Redis Cluster it is one round trip per shard, with ``SPUBLISH``.

        With ``expire`` seconds > 0 (default: ``WS4REDIS_EXPIRE``) the message is also persisted
        under each channel's key.  Heartbeats and ``None`` are not published.  Returns how many
        subscribers Redis handed the message to.  Raises ``redis.exceptions.ConnectionError``
        (or ``TimeoutError``) when Redis cannot be reached within ``WS4REDIS_SOCKET_TIMEOUT``.
        """
        return self.publish_messages([message], expire)

    def publish_messages(
        self, messages: Iterable[RedisMessage | str | bytes | None], expire: int | None = None
    ) -> int:
        """Publish several messages, in order, on every channel in one round trip."""
        if expire is None:
            expire = settings.get("WS4REDIS_EXPIRE")
        payloads = [m for m in (_as_message(m) for m in messages) if m is not None]
        if not payloads or not self._publishers:
            return 0
        pipe = self._connection.pipeline(transaction=False)
        publish = pipe.spublish if self._sharded else pipe.publish
        persist = bool(expire and expire > 0)
        history = settings.get("WS4REDIS_HISTORY")
        for payload in payloads:
            for channel in self._publishers:
                if persist:
                    pipe.set(channel, payload, ex=expire)
                publish(channel, payload)
                if history is not None:  # the history script returns its own count too
                    queue_publish(pipe, channel, payload, history, sharded=self._sharded)
        results = pipe.execute()
        if persist:  # leave out the replies of the SETs, first of each channel's commands
            step = len(results) // (len(payloads) * len(self._publishers))
            results = [r for i, r in enumerate(results) if i % step]
        return int(sum(results))


def _as_message(message: RedisMessage | str | bytes | None) -> RedisMessage | None:
    if message is None or isinstance(message, RedisMessage):
        return message
    return RedisMessage(message)
