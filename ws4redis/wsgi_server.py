"""The WebSocket loop, written once for every server that runs it.

A server binding (uWSGI under gevent, or the development server on threads) subclasses
:class:`WebSocketServer`, names its :class:`~ws4redis.runtime.Runtime` and implements
:meth:`WebSocketServer.upgrade`.  A WebSocket request then goes through these steps:

1. check the opening handshake and the ``Origin`` (HTTP 400/403/405/426 when wrong);
2. build the Django request with its session and user (``WS4REDIS_PROCESS_REQUEST``);
3. negotiate channels from the URL flags (``WS4REDIS_ALLOWED_CHANNELS``; 403 on refusal);
4. subscribe through the process's hub and read the persisted messages, both *before* the
   101 (503 when Redis is unreachable);
5. upgrade, send the persisted messages, pump frames both ways until either side closes;
6. release the subscriptions, whatever happened.

Reading the persisted copies before the 101 means that a message published once the client
has seen its WebSocket open arrives exactly once: live, never also as a persisted copy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import redis
from django.conf import settings as django_settings
from django.core.exceptions import PermissionDenied
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest

from ws4redis import history, metrics, settings
from ws4redis.auth import default_process_request
from ws4redis.exceptions import (
    ForbiddenError,
    HandshakeError,
    ProtocolError,
    RedisUnavailableError,
    ServiceUnavailableError,
    TooManyConnectionsError,
)
from ws4redis.hub import get_hub
from ws4redis.limits import ConnectionSlots, message_rate_limit
from ws4redis.metrics import counters as _stats
from ws4redis.redis_store import RedisMessage, is_heartbeat
from ws4redis.runtime import Runtime
from ws4redis.subscriber import PUBLISH_FLAGS, SUBSCRIBE_FLAGS, RedisSubscriber
from ws4redis.websocket import (
    Close,
    CloseCode,
    Handshake,
    Message,
    Ping,
    WebSocketProtocol,
    check_handshake,
    encode_message,
)

__all__ = ["WebSocketServer", "WebsocketWSGIServer", "default_process_request", "parse_channels"]

logger = logging.getLogger("ws4redis")

KNOWN_FLAGS = frozenset((*SUBSCRIBE_FLAGS, *PUBLISH_FLAGS, "echo"))
#: Seconds to wait for the peer's close frame after we sent ours.
CLOSE_TIMEOUT = 2.0
RECV_SIZE = 65536
GOING_AWAY_REASON = "Server going away; try again"


class Transport(Protocol):
    """The raw connection after the 101, as a binding provides it."""

    def recv(self, size: int) -> bytes:
        """Read up to ``size`` bytes; ``b""`` when the peer has gone."""

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``."""

    def set_timeout(self, seconds: float | None) -> None:
        """Bound later ``recv`` calls to ``seconds`` (``None``: wait forever)."""

    def finish_writing(self) -> None:
        """Send FIN after the close frame; reading goes on until the peer closes too."""

    def shutdown(self) -> None:
        """End the connection in both directions, waking a blocked ``recv``."""

    # Optional, gevent bindings only: when ``can_send_nowait`` is true, ``send_nowait(data)``
    # writes what the socket takes right now without ever yielding and returns how many bytes
    # that was.


def parse_channels(query_string: str) -> list[str]:
    """The URL flags of a WebSocket URL, in both spellings the documentation uses.

    ``subscribe-broadcast&publish-user&echo`` and ``subscribe=broadcast,user&publish=user``
    both work; unknown flags are dropped.
    """
    flags: list[str] = []
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        names = [f"{key}-{v.strip()}" for v in value.split(",")] if value else [key]
        flags.extend(name for name in names if name in KNOWN_FLAGS and name not in flags)
    return flags


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """Whether a handshake with this ``Origin`` may open a WebSocket on ``host``.

    No ``Origin`` (a non-browser client) is allowed.  Otherwise the origin must be the
    request's own host, or be listed in ``WS4REDIS_ALLOWED_ORIGINS`` (``["*"]`` allows every
    origin); when that setting is ``None``, ``CSRF_TRUSTED_ORIGINS`` is the list.
    """
    if origin is None:
        return True
    allowed = settings.get("WS4REDIS_ALLOWED_ORIGINS")
    if allowed is None:
        allowed = tuple(getattr(django_settings, "CSRF_TRUSTED_ORIGINS", ()))
    if "*" in allowed:
        return True
    parts = urlsplit(origin.strip().lower())
    if not parts.scheme or not parts.netloc:
        return False
    if host and parts.netloc == host.strip().lower():
        return True
    return any(_origin_matches(parts.scheme, parts.netloc, entry.lower()) for entry in allowed)


def _origin_matches(scheme: str, netloc: str, entry: str) -> bool:
    entry_parts = urlsplit(entry)
    if entry_parts.scheme != scheme:
        return False
    pattern = entry_parts.netloc
    if pattern.startswith("*."):
        return netloc.endswith(pattern[1:]) or netloc == pattern[2:]
    return netloc == pattern


def _resolved(name: str) -> Any:
    return settings.get(name)


class WebSocketServer:
    """Serve WebSocket requests as a WSGI application; subclassed by each server binding."""

    runtime: Runtime

    def __init__(self, redis_connection: redis.Redis | None = None) -> None:
        import django
        from django.apps import apps

        if not apps.ready:
            django.setup()  # the documented wsgi_websocket.py does not call it
        self._redis = redis_connection
        self._pumps: set[Pump] = set()
        self._slots = ConnectionSlots(self.runtime.lock())
        self._redis_lock = self.runtime.lock()
        self._going_away = False  # set by close_all(): the process is about to exit

    @property
    def redis(self) -> redis.Redis:
        """The client used to publish and to read persisted messages."""
        if self._redis is None:
            from ws4redis.connection import make_client

            with self._redis_lock:  # building a Cluster client does I/O: build it once
                if self._redis is None:
                    self._redis = make_client(runtime=self.runtime)
        return self._redis

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        metrics.ensure_reporter(self.runtime, lambda: self.redis)
        if self._going_away:
            return self.refuse(start_response, ServiceUnavailableError(GOING_AWAY_REASON, 1))
        if not self._slots.acquire(settings.get("WS4REDIS_MAX_CONNECTIONS")):
            logger.warning("WebSocket handshake refused (503): WS4REDIS_MAX_CONNECTIONS reached")
            return self.refuse(start_response, TooManyConnectionsError())
        wake = self.runtime.event()
        try:
            handshake, request, subscriber = self.accept(environ, wake)
            pump = self.prepare(request, subscriber, wake)
        except Exception as exc:
            self._slots.release()
            return self.refuse(start_response, _handshake_error(exc))
        try:
            subprotocol = history.select_subprotocol(handshake.protocols, subscriber.history)
            transport = self.upgrade(environ, start_response, handshake, subprotocol)
        except Exception:
            self._slots.release()
            subscriber.release()
            logger.exception("WebSocket upgrade failed")
            return []
        _stats.handshakes_accepted += 1
        _stats.connections += 1
        self._pumps.add(pump)
        return self.serve(lambda: self._serve(pump, subscriber, transport))

    def _serve(self, pump: Pump, subscriber: RedisSubscriber, transport: Transport) -> None:
        """Step 5 and 6: pump frames until the connection ends, then release everything."""
        try:
            pump.run(transport)
        finally:
            _stats.connections -= 1
            self._pumps.discard(pump)
            self._slots.release()
            subscriber.release()
            self.release_transport(transport)

    def close_all(
        self,
        code: int = CloseCode.GOING_AWAY,
        reason: str = "server going away",
        timeout: float = CLOSE_TIMEOUT,
    ) -> int:
        """Close every open WebSocket of this server with ``code`` (a reload, a shutdown).

        Waits up to ``timeout`` seconds in all for the connections to end; returns how many
        there were.  Handshakes that arrive from then on are refused with 503.
        """
        self._going_away = True
        pumps = list(self._pumps)
        for pump in pumps:
            pump.close(code, reason)
        deadline = time.monotonic() + timeout
        for pump in pumps:
            pump.done.wait(max(0.0, deadline - time.monotonic()))
        return len(pumps)

    # -- the steps --------------------------------------------------------------------------

    def accept(
        self, environ: dict[str, Any], wake: Any
    ) -> tuple[Handshake, HttpRequest, RedisSubscriber]:
        """Steps 1–4: check, build the request, negotiate channels, subscribe."""
        handshake = check_handshake(environ)
        if not origin_allowed(handshake.origin, handshake.host):
            raise ForbiddenError("Origin not allowed")
        request = WSGIRequest(environ)
        try:
            _resolved("WS4REDIS_PROCESS_REQUEST")(request)
            channels = self.negotiate_channels(request)
        except PermissionDenied:
            raise ForbiddenError("Not allowed to open this WebSocket") from None
        request.ws4redis_channels = channels  # type: ignore[attr-defined]
        subscriber = _resolved("WS4REDIS_SUBSCRIBER")(self.redis)
        subscriber.attach(get_hub(self.runtime), wake.set)
        query = environ.get("QUERY_STRING", "")
        subscriber.history = history.cursor_for(handshake.protocols, query, subscriber)
        subscriber.set_pubsub_channels(request, channels)
        return handshake, request, subscriber

    def prepare(self, request: HttpRequest, subscriber: RedisSubscriber, wake: Any) -> Pump:
        """Step 4, continued: queue the persisted messages of the channels, still before the 101.

        Releases the subscriptions when that fails; Redis errors refuse the handshake with 503.
        """
        pump = Pump(subscriber, self.runtime, wake, echo="echo" in self._channels_of(request))
        try:
            if subscriber.history is not None:  # opted in to recovery
                history.send_backlog(subscriber, self.redis, pump)
            else:
                subscriber.send_persisted_messages(pump)
        except Exception as exc:
            subscriber.release()
            if isinstance(exc, redis.exceptions.RedisError):
                logger.warning("Reading persisted messages failed: %s", exc)
                raise RedisUnavailableError() from exc
            raise
        return pump

    def negotiate_channels(self, request: HttpRequest) -> list[str]:
        """The URL flags, filtered by ``WS4REDIS_ALLOWED_CHANNELS`` when set.

        The callback returns the allowed flags; returning ``None`` keeps them all, raising
        ``PermissionDenied`` refuses the handshake with HTTP 403.
        """
        channels = parse_channels(request.META.get("QUERY_STRING", ""))
        allowed_channels = _resolved("WS4REDIS_ALLOWED_CHANNELS")
        if allowed_channels is not None:
            allowed = allowed_channels(request, channels)
            if allowed is not None:
                allowed = set(allowed)
                channels = [c for c in channels if c in allowed]
        return channels

    @staticmethod
    def _channels_of(request: HttpRequest) -> list[str]:
        return getattr(request, "ws4redis_channels", [])

    def refuse(self, start_response: Callable[..., Any], error: HandshakeError) -> list[bytes]:
        """Answer a refused handshake with its status and one-line reason."""
        metrics.record_refused(error.status)
        body = (error.reason + "\n").encode("utf-8")
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        start_response(error.status_line, headers + error.headers)
        return [body]

    # -- what a binding provides ------------------------------------------------------------

    def upgrade(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        handshake: Handshake,
        subprotocol: str | None,
    ) -> Transport:
        """Send the 101 response and return the raw connection."""
        raise NotImplementedError

    def serve(self, run: Callable[[], None]) -> Iterable[bytes]:
        """Run the upgraded connection (``run()``), then return what the application returns.

        By default the request's own task runs it to the end; a binding may hand it to a task
        of its own and end the request at once (see the uWSGI binding).
        """
        run()
        return self.after_close()

    def release_transport(self, transport: Transport) -> None:
        """Give the connection back to the server once the WebSocket is over."""

    def after_close(self) -> Iterable[bytes]:
        """What the WSGI application returns after the WebSocket ended (no HTTP body)."""
        return []


#: The name this class had in ws4redis 0.5.
WebsocketWSGIServer = WebSocketServer


def _handshake_error(exc: Exception) -> HandshakeError:
    """The refusal to answer a handshake that failed with ``exc``, logged."""
    if isinstance(exc, HandshakeError):
        logger.info("WebSocket handshake refused (%s): %s", exc.status, exc.reason)
        return exc
    if isinstance(exc, redis.exceptions.RedisError):  # e.g. loading the session from the cache
        logger.warning("WebSocket handshake refused (503): Redis error: %s", exc)
        return RedisUnavailableError()
    logger.error("WebSocket handshake failed", exc_info=exc)
    return HandshakeError("Internal server error", status=500)


class Pump:
    """Move frames between one client and its subscriber until either side closes.

    Messages can be queued with :meth:`send` before :meth:`run` is given the connection (the
    persisted messages are).  The calling task reads from the client; a second task writes
    everything the client receives (persisted messages, messages from Redis, pongs, heartbeats,
    the close frame), so only one task ever writes to the socket.
    """

    _transport: Transport

    def __init__(
        self,
        subscriber: RedisSubscriber,
        runtime: Runtime,
        wake: Any,
        *,
        echo: bool,
    ) -> None:
        self._subscriber = subscriber
        self._runtime = runtime
        self._wake = wake
        self._echo = echo
        self._protocol = WebSocketProtocol(
            max_message_size=settings.get("WS4REDIS_MAX_MESSAGE_SIZE")
        )
        self._rate_limit = message_rate_limit(settings.get("WS4REDIS_MAX_MESSAGES_PER_SECOND"))
        heartbeat = settings.get("WS4REDIS_HEARTBEAT")
        self._heartbeat_frame = encode_message(heartbeat) if heartbeat else None
        self._heartbeat_interval = settings.get("WS4REDIS_HEARTBEAT_INTERVAL")
        self._direct = type(subscriber).parse_response is RedisSubscriber.parse_response
        self._outbox: list[bytes] = []
        self._close_frame: bytes | None = None
        self._last_published: bytes | None = None
        self._finished = False
        self._writer: Any = None
        # Direct mode (gevent): deliveries are written by the delivering task itself with
        # one non-blocking send; the writer task only takes over what the socket could not.
        self._send_nowait: Callable[[bytes], int] | None = None
        self._writing = False  # the writer task is inside a (possibly blocking) sendall
        self._unsent = b""  # the tail of a partial non-blocking write, sent before anything else
        self._last_write = time.monotonic()  # heartbeats go out after this much idleness
        self._reader_done = runtime.event()
        #: Set once the connection is over (see :meth:`WebSocketServer.close_all`).
        self.done = runtime.event()

    def run(self, transport: Transport) -> None:
        """Serve the connection ``transport`` until it is closed."""
        self._transport = transport
        nowait = getattr(transport, "can_send_nowait", False)
        send_nowait = getattr(transport, "send_nowait", None) if nowait else None
        notify = getattr(self._subscriber, "notify", None)
        if self._runtime.name == "gevent" and self._direct and send_nowait and notify:
            self._send_nowait = send_nowait
            notify(self._wake_writer, self._offer)
            self._kick()  # what was queued before the 101
            if self._heartbeat_frame:
                self._start_writer()
        else:
            if notify is not None:
                notify(self._wake_writer)
            self._start_writer()
        try:
            self._read_loop()
        except OSError as exc:
            logger.debug("WebSocket connection lost: %s", exc)
        finally:
            self._finished = True
            self._reader_done.set()
            self._start_writer()  # direct mode: sends what is left, the close frame, FIN
            self._wake.set()
            self._writer.join(CLOSE_TIMEOUT)
            self.done.set()

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = self._runtime.spawn(self._write_loop)

    def _wake_writer(self) -> None:
        if self._subscriber.overflowed and self._close_frame is None:
            self._overflow()
        if self._send_nowait is not None and not self._finished:
            self._start_writer()
        self._wake.set()

    def _overflow(self) -> None:
        """The client let ``WS4REDIS_SEND_QUEUE_SIZE`` messages pile up: close it (1008).

        When bytes are stuck in flight (the writer blocked on a full socket), the close frame
        can only follow them if the client reads again: it gets ``CLOSE_TIMEOUT`` seconds
        for that, then the connection is shut down, which also ends the blocked write.  Further
        deliveries are dropped meanwhile, so a client that stopped reading never holds more
        memory than its queue.
        """
        logger.warning("Closing a WebSocket whose client reads too slowly")
        self.close(CloseCode.POLICY_VIOLATION, "client too slow")
        if self._writing or self._unsent:
            self._runtime.spawn(self._abort_if_stuck)

    def _abort_if_stuck(self) -> None:
        if not self.done.wait(CLOSE_TIMEOUT):
            self._transport.shutdown()

    def _offer(self, payloads: Sequence[bytes], frames: Sequence[bytes], data: bytes) -> bool:
        """Direct mode: write deliveries at once if nothing is in flight; False if not taken.

        Called by the subscriber inside the hub's task when its inbox is empty: the frames
        (``data``: joined) go out with one non-blocking ``send``, the echo rule applied first,
        without a task switch.  A partial write leaves the rest to the writer task, which sends
        it before anything else.
        """
        if (
            self._writing
            or self._unsent
            or self._outbox
            or self._close_frame is not None
            or self._finished
        ):
            return False
        count = len(payloads)
        if not self._echo and self._last_published in payloads:
            last = self._last_published
            kept = [f for p, f in zip(payloads, frames, strict=True) if p != last]
            data, count = b"".join(kept), len(kept)
            if not data:
                return True
        frame = data
        # The same steps as in _kick, written out: this runs once per recipient of a message.
        try:
            sent = self._send_nowait(frame)  # type: ignore[misc]
        except OSError as exc:
            logger.debug("Writing to a WebSocket failed: %s", exc)
            self._transport.shutdown()  # the reader sees the end and cleans up
            return True
        _stats.messages_out += count
        _stats.bytes_out += sent
        if self._heartbeat_frame:
            self._last_write = time.monotonic()
        if sent < len(frame):
            self._unsent = frame[sent:]
            self._wake_writer()
        return True

    def _kick(self) -> None:
        """Direct mode: write what is queued now, without waking a task, if the socket takes it.

        Called when frames were queued (persisted messages, a pong).  Only when nothing is in
        flight (no partial write left, the writer not inside ``sendall``), so the bytes of two
        frames never interleave; otherwise the writer task sends them after what is in flight.
        """
        if self._writing or self._unsent or self._close_frame is not None or self._finished:
            self._wake_writer()
            return
        chunks = self._take_pending()
        if not chunks:
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            sent = self._send_nowait(data)  # type: ignore[misc]
        except OSError as exc:
            logger.debug("Writing to a WebSocket failed: %s", exc)
            self._transport.shutdown()  # the reader sees the end and cleans up
            return
        _stats.bytes_out += sent
        if self._heartbeat_frame:
            self._last_write = time.monotonic()
        if sent < len(data):
            self._unsent = data[sent:]
            self._wake_writer()

    # the API the subscriber sees (``send_persisted_messages(websocket)``)

    def send(self, message: bytes | str) -> None:
        """Queue a message for the client."""
        _stats.messages_out += 1
        self._outbox.append(encode_message(message))
        self._flush_soon()

    def _flush_soon(self) -> None:
        if self._send_nowait is not None:
            self._kick()
        else:
            self._wake.set()

    @property
    def closed(self) -> bool:
        """Whether a close frame was queued."""
        return self._close_frame is not None

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Queue the close frame; nothing is written after it."""
        if self._close_frame is None:
            if not self._protocol.closed_by_peer:  # not our answer to the client's close
                metrics.record_close(code)
            self._close_frame = self._protocol.send_close(code, reason)
            self._wake_writer()

    # reading

    def _read_loop(self) -> None:
        while True:
            data = self._transport.recv(RECV_SIZE)
            if not data:
                logger.debug("WebSocket client went away without a close frame")
                return
            try:
                events = self._protocol.receive_data(data)
            except ProtocolError as exc:
                self._handle(self._protocol.events_before_error)
                logger.info("Closing WebSocket with %s: %s", exc.close_code, exc.reason)
                self.close(exc.close_code, exc.reason)
                return self._await_peer_close()
            if self._handle(events) or self._close_frame is not None:
                return self._await_peer_close()

    def _handle(self, events: list[Any]) -> bool:
        """Act on decoded events in order; True once the client's close frame was answered."""
        for event in events:
            if isinstance(event, Message):
                if self._rate_limit is not None and not self._rate_limit.take():
                    logger.info("Closing a WebSocket whose client sends too many messages")
                    self.close(CloseCode.POLICY_VIOLATION, "too many messages")
                    return False
                self._on_message(event.payload)
            elif isinstance(event, Ping):
                self._outbox.append(self._protocol.pong_for(event))
                self._flush_soon()
            elif isinstance(event, Close):
                logger.debug("WebSocket closed by the client (%s %s)", event.code, event.reason)
                self._outbox.clear()
                self.close(event.code or CloseCode.NORMAL)
                return True
        return False

    def _on_message(self, payload: bytes) -> None:
        if is_heartbeat(payload):
            return
        _stats.messages_in += 1
        if not self._subscriber.publish_channels:
            return
        self._last_published = payload
        try:
            self._subscriber.publish_message(RedisMessage(payload))
        except redis.exceptions.RedisError as exc:
            logger.warning("Publishing a client message failed: %s", exc)
            self.close(CloseCode.TRY_AGAIN_LATER, "Redis unavailable")

    def _await_peer_close(self) -> None:
        self._transport.set_timeout(CLOSE_TIMEOUT)
        try:
            while not self._protocol.closed_by_peer:
                data = self._transport.recv(RECV_SIZE)
                if not data:
                    return
                self._protocol.receive_data(data)
        except (OSError, ProtocolError):
            return

    # writing

    def _write_loop(self) -> None:
        try:
            while not self._write_once():
                pass
        except OSError as exc:
            logger.debug("Writing to a WebSocket failed: %s", exc)
            self._transport.shutdown()
            return
        except Exception:
            logger.exception("Sending to a WebSocket failed")
            self._fail_internally()
            return
        self._transport.finish_writing()
        if not self._reader_done.wait(CLOSE_TIMEOUT):
            self._transport.shutdown()  # the client never answered our close frame

    def _fail_internally(self) -> None:
        """After a bug (say, in a custom ``parse_response``): close 1011 if still possible."""
        already_closed = self._close_frame is not None
        self.close(CloseCode.INTERNAL_ERROR, "internal error")
        try:
            if not already_closed and self._close_frame:
                self._transport.sendall(self._close_frame)
        except OSError:
            pass
        self._transport.shutdown()

    def _write_once(self) -> bool:
        """Write what is pending; True once the close frame is out or the reader is gone."""
        interval = self._heartbeat_interval
        woken = self._wake.wait(max(0.0, self._last_write + interval - time.monotonic()))
        self._wake.clear()
        # Read before the close frame: whatever the reader queued before it finished is seen.
        finished = self._finished
        chunks = self._take_pending()
        if (
            not chunks
            and not woken
            and self._heartbeat_frame
            and self._close_frame is None
            and time.monotonic() - self._last_write >= interval
        ):
            chunks.append(self._heartbeat_frame)
        if self._subscriber.overflowed and self._close_frame is None:
            self._overflow()
        close_frame = self._close_frame
        if close_frame is not None:
            chunks.append(close_frame)
        if self._unsent:
            chunks.insert(0, self._unsent)
            self._unsent = b""
        if chunks:
            self._writing = True
            data = b"".join(chunks)
            try:
                self._transport.sendall(data)
            finally:
                self._writing = False
            _stats.bytes_out += len(data)
            self._last_write = time.monotonic()
        # Decided on what was read before writing: a close frame queued while ``sendall``
        # blocked is not out yet, and the next round writes it.
        return close_frame is not None or finished

    def _take_pending(self) -> list[bytes]:
        chunks, self._outbox = self._outbox, []
        if self._close_frame is not None:
            return chunks
        queued = len(chunks)
        subscriber = self._subscriber
        while True:
            if self._direct:
                item = subscriber.next_delivery()
                if item is None:
                    break
                payload, frame = item[1], item[2]
            else:
                response = subscriber.parse_response()
                if response is None:
                    break
                payload, frame = response[2], None
            if self._echo or payload != self._last_published:
                chunks.append(frame or encode_message(payload))
        _stats.messages_out += len(chunks) - queued
        return chunks
