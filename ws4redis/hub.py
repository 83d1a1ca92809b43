"""One Redis pub/sub connection per worker process, shared by all of its WebSockets.

The hub reference-counts channel subscriptions: a channel is subscribed in Redis when its first
local listener arrives and unsubscribed when its last one leaves.  A reader task receives every
message once, encodes its WebSocket frame once, and hands that same frame to each local listener
of the channel.  When the Redis connection drops, the reader reconnects with exponential backoff
and full jitter and subscribes again to every channel that still has listeners.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import redis

try:
    import hiredis
except ImportError:  # pragma: no cover - redis[hiredis] is a requirement
    hiredis = None

from ws4redis.exceptions import RedisUnavailableError
from ws4redis.runtime import Runtime
from ws4redis.websocket import encode_message

logger = logging.getLogger("ws4redis")

#: Seconds before the first reconnect attempt; doubled after each failure up to the cap.
RECONNECT_BASE_DELAY = 0.1
#: Upper bound in seconds of the delay between reconnect attempts.
RECONNECT_MAX_DELAY = 1.0
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
#: Bytes read from the pub/sub socket at once; one read usually holds many messages.
READ_SIZE = 1 << 16


class Listener(Protocol):
    """What the hub delivers to: one WebSocket's subscriber."""

    def deliver(self, channel: str, payload: bytes, frame: bytes) -> None:
        """Take one message of ``channel``; ``frame`` is it encoded as a WebSocket frame."""

    # Optional: ``deliver_many(channel, payloads, frames, data)`` takes consecutive messages of
    # ``channel`` at once (``data`` is the frames joined); without it, ``deliver`` is called
    # for each.


class PubSubHub:
    """Shares one Redis subscription connection among the listeners of a process."""

    def __init__(
        self,
        connection_factory: Callable[[], redis.Connection],
        runtime: Runtime,
        *,
        subscribe_timeout: float = 5.0,
    ) -> None:
        self._connection_factory = connection_factory
        self._runtime = runtime
        self._subscribe_timeout = subscribe_timeout
        self._listeners: dict[str, set[Listener]] = {}
        self._unacknowledged: dict[str, int] = {}
        self._acknowledged = runtime.event()
        self._send_lock = runtime.lock()
        self._connect_lock = runtime.lock()
        self._connection: redis.Connection | None = None
        self._reader: Any = None
        self._closed = False
        self._parser_of: redis.Connection | None = None  # the connection _parser reads
        self._parser: Any = None

    # -- public API -----------------------------------------------------------------------

    def subscribe(self, listener: Listener, channels: Iterable[str]) -> None:
        """Add ``listener`` to ``channels`` and wait until Redis confirms the subscriptions.

        Raises :class:`~ws4redis.exceptions.RedisUnavailableError` when Redis cannot be reached.
        """
        channels = list(dict.fromkeys(channels))
        if not channels:
            return
        self._ensure_connected()
        new = [c for c in channels if not self._listeners.get(c)]
        for channel in channels:
            self._listeners.setdefault(channel, set()).add(listener)
        try:
            if new:
                self._send("SUBSCRIBE", new)
            self._wait_acknowledged(channels)
        except RedisUnavailableError:
            self.unsubscribe(listener, channels)
            raise

    def unsubscribe(self, listener: Listener, channels: Iterable[str]) -> None:
        """Remove ``listener`` from ``channels``; unsubscribe those nobody else listens to."""
        gone = []
        for channel in channels:
            listeners = self._listeners.get(channel)
            if listeners is None:
                continue
            listeners.discard(listener)
            if not listeners:
                del self._listeners[channel]
                gone.append(channel)
        if gone and self._connection is not None:
            try:
                self._send("UNSUBSCRIBE", gone)
            except RedisUnavailableError:
                pass  # the reconnect subscribes only to channels that still have listeners

    @property
    def channels(self) -> list[str]:
        """The channels that have at least one local listener."""
        return list(self._listeners)

    def listener_count(self, channel: str) -> int:
        """How many local listeners ``channel`` has."""
        return len(self._listeners.get(channel, ()))

    def close(self) -> None:
        """Stop the reader and drop the Redis connection."""
        self._closed = True
        if self._connection is not None:
            self._connection.disconnect()

    # -- connection -------------------------------------------------------------------------

    def _ensure_connected(self) -> None:
        if self._connection is not None:
            return
        with self._connect_lock:
            if self._connection is not None:
                return
            if self._reader is not None:
                raise RedisUnavailableError()  # the reader is reconnecting: fail fast
            self._connection = self._connect()
            self._reader = self._runtime.spawn(self._read_forever)

    def _connect(self) -> redis.Connection:
        connection = self._connection_factory()
        try:
            connection.connect()
        except REDIS_ERRORS as exc:
            logger.warning("Redis pub/sub connection failed: %s", exc)
            connection.disconnect()
            raise RedisUnavailableError() from exc
        return connection

    def _send(self, command: str, channels: list[str]) -> None:
        connection = self._connection
        if connection is None:
            raise RedisUnavailableError()
        for channel in channels:
            if command == "SUBSCRIBE":
                self._unacknowledged[channel] = self._unacknowledged.get(channel, 0) + 1
        try:
            with self._send_lock:
                connection.send_command(command, *channels, check_health=False)
        except REDIS_ERRORS as exc:
            logger.warning("Redis pub/sub command %s failed: %s", command, exc)
            raise RedisUnavailableError() from exc

    def _wait_acknowledged(self, channels: list[str]) -> None:
        deadline = time.monotonic() + self._subscribe_timeout
        while True:
            event = self._acknowledged  # taken before the check, so no wake-up is missed
            if not any(self._unacknowledged.get(c) for c in channels):
                return
            left = deadline - time.monotonic()
            if self._connection is None or left <= 0:
                raise RedisUnavailableError()
            event.wait(left)

    # -- reader -----------------------------------------------------------------------------

    def _read_forever(self) -> None:
        delay = RECONNECT_BASE_DELAY
        while not self._closed:
            connection = self._connection
            try:
                if connection is None:
                    connection = self._reconnect()
                    delay = RECONNECT_BASE_DELAY
                self._dispatch_all(self._read_responses(connection))
            except REDIS_ERRORS as exc:
                if self._closed:
                    return
                self._drop_connection(exc)
                self._runtime.sleep(random.uniform(0, delay))
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
            except Exception:
                logger.exception("Unexpected error in the Redis pub/sub reader")
                self._drop_connection(None)

    def _read_responses(self, connection: redis.Connection) -> list[Any]:
        """Wait for the next replies of ``connection``: all those that one read brought in.

        With hiredis, the socket is read directly, ``READ_SIZE`` bytes at a time, and the
        bytes are parsed in C: a burst of messages costs one read, and no redis-py code runs per
        message (hiredis parses RESP2 replies and RESP3 pushes alike).  Without hiredis,
        redis-py reads one reply at a time.
        """
        sock = getattr(connection, "_sock", None)
        if hiredis is None or sock is None:
            return [connection.read_response(push_request=True)]
        if self._parser_of is not connection:
            self._parser_of, self._parser = connection, hiredis.Reader()
        parser = self._parser
        responses: list[Any] = []
        while True:
            response = parser.gets()
            if response is False:
                if responses:
                    return responses
                data = sock.recv(READ_SIZE)
                if not data:
                    raise redis.exceptions.ConnectionError("Connection closed by server.")
                parser.feed(data)
                continue
            if isinstance(response, Exception):  # an error reply: raised after those before it
                response = redis.exceptions.ResponseError(str(response))
            responses.append(response)

    def _reconnect(self) -> redis.Connection:
        connection = self._connection_factory()
        connection.connect()
        self._unacknowledged.clear()
        self._connection = connection
        channels = list(self._listeners)
        if channels:
            self._send("SUBSCRIBE", channels)
        logger.info("Redis pub/sub connection restored; %d channels resubscribed", len(channels))
        return connection

    def _drop_connection(self, exc: BaseException | None) -> None:
        if self._connection is not None:
            logger.warning("Redis pub/sub connection lost: %s", exc)
            self._connection.disconnect()
        self._connection = None
        self._notify_acknowledged()

    def _dispatch_all(self, responses: list[Any]) -> None:
        """Act on replies in order; a run of messages on one channel is delivered at once.

        Under load, one read brings many messages: a listener then gets a run of consecutive
        messages of a channel in one call (``deliver_many``), which the WebSocket loop writes
        with one ``send``.  Runs never reorder messages of different channels.
        """
        index, count = 0, len(responses)
        while index < count:
            response = responses[index]
            if isinstance(response, Exception):
                raise response
            end = index + 1
            if response[0] == b"message":
                channel = response[1]
                while end < count and _is_message_on(responses[end], channel):
                    end += 1
            if end - index > 1:
                self._deliver_run(
                    channel.decode("utf-8", "surrogateescape"),
                    [reply[2] for reply in responses[index:end]],
                )
            else:
                self._dispatch(response)
            index = end

    def _dispatch(self, response: Any) -> None:
        kind = response[0]
        if kind == b"message":
            self._deliver(response[1].decode("utf-8", "surrogateescape"), response[2])
        elif kind == b"subscribe":
            channel = response[1].decode("utf-8", "surrogateescape")
            count = self._unacknowledged.get(channel, 0)
            if count <= 1:
                self._unacknowledged.pop(channel, None)
            else:
                self._unacknowledged[channel] = count - 1
            self._notify_acknowledged()

    def _notify_acknowledged(self) -> None:
        event, self._acknowledged = self._acknowledged, self._runtime.event()
        event.set()

    def _deliver(self, channel: str, payload: bytes) -> None:
        listeners = self._listeners.get(channel)
        if not listeners:
            return
        frame = encode_message(payload)
        for listener in list(listeners):
            try:
                listener.deliver(channel, payload, frame)
            except Exception:
                logger.exception("Delivering a message on %s failed", channel)

    def _deliver_run(self, channel: str, payloads: list[bytes]) -> None:
        listeners = self._listeners.get(channel)
        if not listeners:
            return
        frames = [encode_message(payload) for payload in payloads]
        data = b"".join(frames)
        for listener in list(listeners):
            deliver_many = getattr(listener, "deliver_many", None)
            if deliver_many is None:
                for payload, frame in zip(payloads, frames, strict=True):
                    self._deliver_one(listener, channel, payload, frame)
                continue
            try:
                deliver_many(channel, payloads, frames, data)
            except Exception:
                logger.exception("Delivering a message on %s failed", channel)

    @staticmethod
    def _deliver_one(listener: Listener, channel: str, payload: bytes, frame: bytes) -> None:
        try:
            listener.deliver(channel, payload, frame)
        except Exception:
            logger.exception("Delivering a message on %s failed", channel)


def _is_message_on(response: Any, channel: bytes) -> bool:
    return (
        not isinstance(response, Exception) and response[0] == b"message" and response[1] == channel
    )


_hubs: dict[tuple[int, str], PubSubHub] = {}


def get_hub(runtime: Runtime) -> PubSubHub:
    """The hub of this process for ``runtime`` (a new one after a fork)."""
    key = (os.getpid(), runtime.name)
    hub = _hubs.get(key)
    if hub is None:
        from ws4redis.connection import make_connection

        hub = _hubs[key] = PubSubHub(make_connection, runtime)
    return hub
