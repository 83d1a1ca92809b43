"""``RedisSubscriber``: one WebSocket's view of its Redis channels.

Replace it with ``WS4REDIS_SUBSCRIBER`` to add channels of your own: subclass it, call the
parent's :meth:`RedisSubscriber.set_pubsub_channels`, then :meth:`RedisSubscriber.subscribe`
to more channel keys.  All subscribers of a worker process share one Redis pub/sub connection
(the hub); a subscriber receives the messages of its channels in an inbox that the WebSocket
loop drains.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ws4redis import settings
from ws4redis.redis_store import SELF, RedisMessage, RedisStore, audience_channels
from ws4redis.websocket import encode_message

if TYPE_CHECKING:
    import redis
    from django.http import HttpRequest

    from ws4redis.history import HistoryCursor
    from ws4redis.hub import PubSubHub, ShardedHub

#: ``sink(payloads, frames, data) -> bool``: see :meth:`RedisSubscriber.notify`.
Sink = Callable[[Sequence[bytes], Sequence[bytes], bytes], bool]

#: The URL flags that subscribe.
SUBSCRIBE_FLAGS = ("subscribe-session", "subscribe-group", "subscribe-user", "subscribe-broadcast")
PUBLISH_FLAGS = ("publish-session", "publish-group", "publish-user", "publish-broadcast")


class RedisSubscriber(RedisStore):
    """Subscriber class, used by the WebSocket loop to listen on its channels."""

    subscription_channels = SUBSCRIBE_FLAGS
    publish_channels_flags = PUBLISH_FLAGS

    def __init__(self, connection: redis.Redis | None = None) -> None:
        super().__init__(connection)
        self._subscriptions: list[str] = []
        self._inbox: deque[tuple[str, bytes, bytes | None]] = deque()
        self._hub: PubSubHub | ShardedHub | None = None
        self._wake: Callable[[], None] = _nothing
        self._sink: Sink | None = None
        self._max_pending = settings.get("WS4REDIS_SEND_QUEUE_SIZE")
        self.overflowed = False
        # A ws4redis.history.HistoryCursor when the client opted in to recovery: then the hub
        # channels are the history channels and messages come with their ids.
        self.history: HistoryCursor | None = None

    def attach(self, hub: PubSubHub | ShardedHub, wake: Callable[[], None]) -> None:
        """Connect this subscriber to the process's hub; ``wake`` is called on each delivery."""
        self._hub = hub
        self._wake = wake

    def notify(self, wake: Callable[[], None], sink: Sink | None = None) -> None:
        """Call ``wake`` instead of the one given to :meth:`attach` on each delivery.

        With a ``sink``, deliveries that find the inbox empty are first offered to
        ``sink(payloads, frames, data)`` (``data``: the frames joined); when that returns
        ``True`` they were taken (the WebSocket loop wrote them at once), otherwise they go to
        the inbox and ``wake`` is called.
        """
        self._wake = wake
        self._sink = sink

    @property
    def subscriptions(self) -> list[str]:
        """The channel keys this subscriber listens on."""
        return list(self._subscriptions)

    def set_pubsub_channels(self, request: HttpRequest, channels: Iterable[str]) -> None:
        """Initialize the channels used for publishing and subscribing messages.

        ``channels`` are the URL flags that survived ``WS4REDIS_ALLOWED_CHANNELS``; the facility
        is the request path after ``WEBSOCKET_URL``.
        """
        flags = set(channels)
        facility = facility_of(request)

        def for_flags(kind: str) -> list[str]:
            return audience_channels(
                facility,
                broadcast=f"{kind}-broadcast" in flags,
                users=[SELF] if f"{kind}-user" in flags else [],
                groups=[SELF] if f"{kind}-group" in flags else [],
                sessions=[SELF] if f"{kind}-session" in flags else [],
                request=request,
            )

        self._publishers = for_flags("publish")
        self.subscribe(for_flags("subscribe"))

    def subscribe(self, channels: Iterable[str]) -> None:
        """Listen on more channel keys (full keys, prefix included)."""
        channels = [c for c in channels if c not in self._subscriptions]
        if self._hub is None:
            raise RuntimeError("RedisSubscriber.attach() must be called before subscribing")
        self._hub.subscribe(self, self._hub_channels(channels))
        self._subscriptions.extend(channels)

    def _hub_channels(self, channels: list[str]) -> list[str]:
        return channels if self.history is None else self.history.hub_channels(channels)

    def deliver(self, channel: str, payload: bytes, frame: bytes | None) -> None:
        """Take a message from the hub (called by the hub, never blocks)."""
        if self.history is not None:  # ``payload`` is enveloped, as is ``frame``
            frame = frame or encode_message(payload)
            payload = self.history.admit(channel, payload)  # type: ignore[assignment]
            if payload is None:
                return
        if not self._inbox and self._sink is not None:
            if frame is None:
                frame = encode_message(payload)
            if self._sink((payload,), (frame,), frame):
                return
        if len(self._inbox) >= self._max_pending:
            self.overflowed = True
        else:
            self._inbox.append((channel, payload, frame))
        self._wake()

    def deliver_many(
        self, channel: str, payloads: list[bytes], frames: list[bytes], data: bytes
    ) -> None:
        """Take consecutive messages of ``channel`` from the hub; ``data`` is their frames joined.

        The loop writes them with one ``send`` when nothing else is waiting.
        """
        if (
            not self._inbox
            and self._sink is not None
            and type(self).deliver is RedisSubscriber.deliver
            and self.history is None
            and self._sink(payloads, frames, data)
        ):
            return
        for payload, frame in zip(payloads, frames, strict=True):
            self.deliver(channel, payload, frame)

    def next_delivery(self) -> tuple[str, bytes, bytes | None] | None:
        """Pop the oldest delivered ``(channel, payload, frame)``, or ``None``."""
        return self._inbox.popleft() if self._inbox else None

    def parse_response(self) -> list[bytes] | None:
        """Pop the oldest delivered message as a pub/sub response ``[b"message", channel, data]``.

        Returns ``None`` when nothing is waiting.  A subclass may override this to filter or
        rewrite messages; the loop then sends what it returns.
        """
        item = self.next_delivery()
        if item is None:
            return None
        return [b"message", item[0].encode("utf-8"), item[1]]

    def get_file_descriptor(self) -> int | None:
        """The file descriptor of the process's shared Redis pub/sub connection, if connected."""
        connection = getattr(self._hub, "_connection", None)
        sock = getattr(connection, "_sock", None)
        return sock.fileno() if sock is not None else None

    def send_persisted_messages(self, websocket: Any) -> None:
        """Send the persisted copies of this subscriber's channels right after connecting."""
        if not settings.get("WS4REDIS_EXPIRE") or not self._subscriptions:
            return
        if self._sharded:  # MGET refuses keys of different slots: one MGET per slot
            values = self._connection.mget_nonatomic(self._subscriptions)
        else:
            values = self._connection.mget(self._subscriptions)
        for value in values:
            message = RedisMessage(value) if value is not None else None
            if message is not None:
                websocket.send(message)

    def send_persited_messages(self, websocket: Any) -> None:
        """The old, misspelt name of :meth:`send_persisted_messages`."""
        self.send_persisted_messages(websocket)

    def release(self) -> None:
        """Free this WebSocket's subscriptions (the hub unsubscribes unused channels)."""
        if self._hub is not None and self._subscriptions:
            self._hub.unsubscribe(self, self._hub_channels(self._subscriptions))
        self._subscriptions = []
        self._inbox.clear()
        self._sink = None


def facility_of(request: HttpRequest) -> str:
    """The facility a WebSocket request addresses: its path after ``WEBSOCKET_URL``."""
    path = request.path_info
    prefix = settings.get("WEBSOCKET_URL")
    return path[len(prefix) :] if path.startswith(prefix) else path.lstrip("/")


def _nothing() -> None:
    return None
