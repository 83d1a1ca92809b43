"""Missed-message recovery: a Redis Stream per channel and the opt-in subprotocol that replays it.

With ``WS4REDIS_HISTORY = {"size": N, "ttl": seconds}`` every message published through
:class:`~ws4redis.redis_store.RedisStore` is also appended to the stream ``{CHANNEL}:history``
(``XADD … MAXLEN ~ N``, ``EXPIRE ttl``) and published, with its stream id, on the pub/sub channel
of the same name — one Lua script, so the order of the ids is the order of delivery.  The braces
make the stream's cluster slot the channel's own slot.

Clients that do not offer :data:`SUBPROTOCOL` keep listening on the plain channels and receive
the raw payloads exactly as before.  Clients that offer it listen on the history channels and
receive every frame as ``HEADER "\\n" PAYLOAD``:

``<tag>:<id>``
    a message of the channel whose tag is ``<tag>`` (:func:`channel_tag`), stream id ``<id>``;
*empty*
    a message without id (a persisted copy, on a first connection only);
``gap``
    some messages after the client's position on the channels listed (comma-separated tags)
    are no longer in the history;
``sync``
    the client's positions (``tag:id,…``) once the missed messages were replayed.

A client reconnects with ``?…&last-id=tag:id,tag:id`` (the last id seen per tag).  See
``docs/recovery.rst`` for the guarantees and their limits.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ws4redis import settings
from ws4redis.exceptions import HandshakeError
from ws4redis.websocket import select_subprotocol as first_offered

if TYPE_CHECKING:
    import redis

#: The subprotocol a client offers to opt in.
SUBPROTOCOL = "ws4redis.history.v1"
#: The URL query parameter carrying the client's positions on reconnect.
LAST_ID_PARAM = "last-id"
#: The most positions a client may send in ``last-id`` (a named cap on that input).
MAX_POSITIONS = 64
#: Headers of the notices (a tag is hexadecimal, so it never looks like one of these).
GAP = b"gap"
SYNC = b"sync"
#: The position of a channel whose stream does not exist.
ORIGIN = "0-0"

StreamId = tuple[int, int]

_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
_TAG = re.compile(r"^[0-9a-f]{12}$")

# KEYS[1]: the stream, also the history channel; KEYS[2] (one Redis server only): the counter
# giving the order of messages across channels.  ARGV: size, ttl, tag, payload.
_PUBLISH_SCRIPT = """
local order = KEYS[2] and redis.call('INCR', KEYS[2]) or 0
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[4], 'o', order)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('{command}', KEYS[1], ARGV[3] .. ':' .. id .. '\\n' .. ARGV[4])
"""
PUBLISH_SCRIPT = _PUBLISH_SCRIPT.format(command="PUBLISH")
SPUBLISH_SCRIPT = _PUBLISH_SCRIPT.format(command="SPUBLISH")


# -- names and the envelope -------------------------------------------------------------------


def stream_key(channel: str) -> str:
    """The stream (and history channel) of ``channel``: ``{CHANNEL}:history``."""
    return "{" + channel + "}:history"


def channel_tag(channel: str) -> str:
    """A short, stable tag naming ``channel`` to the client without revealing it (12 hex)."""
    return hashlib.blake2s(channel.encode("utf-8"), digest_size=6).hexdigest()


def parse_id(value: str | bytes) -> StreamId:
    """A stream id ``"MS-SEQ"`` as a comparable pair; ``ValueError`` when malformed."""
    text = _text(value)
    match = _ID.match(text)
    if match is None:
        raise ValueError(f"not a stream id: {text!r}")
    return int(match[1]), int(match[2])


def envelope(tag: str, stream_id: str, payload: bytes) -> bytes:
    """The opt-in form of a message: ``tag:id`` newline payload."""
    return f"{tag}:{stream_id}\n".encode("ascii") + payload


def split_envelope(data: bytes) -> tuple[bytes, bytes]:
    """``(header, payload)`` of an enveloped message."""
    header, _, payload = data.partition(b"\n")
    return header, payload


def gap_notice(tags: Iterable[str]) -> bytes:
    """The frame telling a client that messages of these channels are lost."""
    return GAP + b"\n" + ",".join(tags).encode("ascii")


def sync_notice(positions: dict[str, str]) -> bytes:
    """The frame giving a client its positions once the backlog was replayed."""
    body = ",".join(f"{tag}:{stream_id}" for tag, stream_id in positions.items())
    return SYNC + b"\n" + body.encode("ascii")


def parse_last_id(query_string: str) -> dict[str, str] | None:
    """The positions ``{tag: id}`` a client sent in ``last-id``, or ``None`` when absent.

    Raises :class:`~ws4redis.exceptions.HandshakeError` (400) when malformed.
    """
    values = [v for k, v in parse_qsl(query_string, keep_blank_values=True) if k == LAST_ID_PARAM]
    if not values:
        return None
    positions: dict[str, str] = {}
    for item in ",".join(values).split(","):
        if not item:
            continue
        tag, _, stream_id = item.partition(":")
        if not _TAG.match(tag) or not _ID.match(stream_id):
            raise HandshakeError("Malformed last-id")
        positions[tag] = stream_id
    if len(positions) > MAX_POSITIONS:
        raise HandshakeError("Too many positions in last-id")
    return positions


# -- publishing -------------------------------------------------------------------------------


def queue_publish(
    pipe: Any, channel: str, payload: bytes, history: dict[str, int], *, sharded: bool
) -> None:
    """Queue on ``pipe`` the script keeping ``payload`` in ``channel``'s history."""
    args = (history["size"], history["ttl"], channel_tag(channel), payload)
    # EVAL through execute_command: redis-py's cluster pipeline has no eval(), but routes an
    # EVAL by its keys like any other command.
    if sharded:  # no key shared by every slot: the order across channels is the ids' order
        pipe.execute_command("EVAL", SPUBLISH_SCRIPT, 1, stream_key(channel), *args)
    else:
        pipe.execute_command("EVAL", PUBLISH_SCRIPT, 2, stream_key(channel), order_key(), *args)


def order_key() -> str:
    """The counter ordering messages across channels on one Redis server."""
    prefix = settings.get("WS4REDIS_PREFIX")
    return f"{prefix}:history:order" if prefix else "ws4redis:history:order"


# -- one opt-in connection --------------------------------------------------------------------


@dataclass
class Entry:
    """One message of the backlog."""

    order: int
    stream_id: StreamId
    channel: int
    frame: bytes = field(compare=False)


class HistoryCursor:
    """An opt-in connection's view of its channels' histories.

    ``positions`` are the ``{tag: id}`` the client sent (``None``: a first connection).  Holds
    per history channel the id up to which live messages were already replayed.
    """

    def __init__(self, positions: dict[str, str] | None) -> None:
        self.positions = positions
        self._thresholds: dict[str, StreamId] = {}

    def hub_channels(self, channels: Iterable[str]) -> list[str]:
        """The pub/sub channels to listen on instead of ``channels``."""
        return [stream_key(channel) for channel in channels]

    def admit(self, history_channel: str, data: bytes) -> bytes | None:
        """The payload of a live enveloped message, or ``None`` when it was replayed already."""
        header, payload = split_envelope(data)
        threshold = self._thresholds.get(history_channel)
        if threshold is not None:
            try:
                stream_id = parse_id(header.partition(b":")[2])
            except ValueError:
                return None
            if stream_id <= threshold:
                return None
            del self._thresholds[history_channel]  # ids only grow from here
        return payload

    def replay(self, connection: redis.Redis, channels: Sequence[str], websocket: Any) -> None:
        """Queue on ``websocket`` the gap notice, the missed messages in id order, the sync.

        Called after subscribing and before the 101, like the persisted messages.
        """
        reads = self._read(connection, channels)
        gaps, entries, positions = [], [], {}
        for order, (channel, (backlog, info)) in enumerate(zip(channels, reads, strict=True)):
            tag = channel_tag(channel)
            known = None if self.positions is None else self.positions.get(tag)
            position, gap = _position(known, backlog, info)
            if gap:
                gaps.append(tag)
            for stream_id, fields in backlog:
                text = _text(stream_id)
                frame = envelope(tag, text, fields[b"m"])
                entries.append(Entry(int(fields.get(b"o", 0)), parse_id(text), order, frame))
            positions[tag] = position
            if position != ORIGIN:
                self._thresholds[stream_key(channel)] = parse_id(position)
        if gaps:
            websocket.send(gap_notice(gaps))
        for entry in sorted(entries, key=lambda e: (e.order, e.stream_id, e.channel)):
            websocket.send(entry.frame)
        websocket.send(sync_notice(positions))

    def _read(self, connection: redis.Redis, channels: Sequence[str]) -> list[tuple[list, Any]]:
        pipe = connection.pipeline(transaction=False)
        known = []
        for channel in channels:
            key = stream_key(channel)
            since = None if self.positions is None else self.positions.get(channel_tag(channel))
            known.append(since is not None)
            if since is not None:
                pipe.xrange(key, min="(" + since, max="+")
            pipe.xinfo_stream(key)
        results = iter(pipe.execute(raise_on_error=False))
        reads = []
        for has_backlog in known:
            backlog = next(results) if has_backlog else []
            if isinstance(backlog, Exception):
                raise backlog
            reads.append((backlog, next(results)))
        return reads


def _position(known: str | None, backlog: list, info: Any) -> tuple[str, bool]:
    """``(position after the replay, whether messages after ``known`` are lost)``."""
    missing = isinstance(info, Exception)
    if missing and "no such key" not in str(info).lower():
        raise info
    if known is None:  # a first connection: live messages from the stream's end on
        return (ORIGIN if missing else _text(info["last-generated-id"])), False
    if missing:  # expired or never written: if it ever held entries after ``known``, they are gone
        return ORIGIN, known != ORIGIN
    first = info.get("first-entry")
    gap = known != ORIGIN and first is not None and parse_id(_text(first[0])) > parse_id(known)
    position = _text(backlog[-1][0]) if backlog else known
    return position, gap


def _text(value: str | bytes) -> str:
    return value.decode("ascii") if isinstance(value, (bytes, bytearray)) else value


# -- the handshake ----------------------------------------------------------------------------


def config() -> dict[str, int] | None:
    """``WS4REDIS_HISTORY`` (``{"size": …, "ttl": …}``), or ``None`` when recovery is off."""
    value: dict[str, int] | None = settings.get("WS4REDIS_HISTORY")
    return value


def cursor_for(
    protocols: Sequence[str], query_string: str, subscriber: Any
) -> HistoryCursor | None:
    """The cursor of a handshake that opts in (history on, subprotocol offered), else ``None``.

    A subscriber class that overrides ``parse_response`` rewrites payloads: it cannot carry
    the envelope, so its clients are not opted in (they see the subprotocol refused).
    """
    from ws4redis.subscriber import RedisSubscriber

    if SUBPROTOCOL not in protocols or config() is None:
        return None
    if type(subscriber).parse_response is not RedisSubscriber.parse_response:
        return None
    return HistoryCursor(parse_last_id(query_string))


def select_subprotocol(protocols: Sequence[str], cursor: HistoryCursor | None) -> str | None:
    """Ours when the client opted in; otherwise the first offered one that is not ours."""
    if cursor is not None:
        return SUBPROTOCOL
    return first_offered(p for p in protocols if p != SUBPROTOCOL)


class Enveloped:
    """Wraps the connection for ``send_persisted_messages``: messages without id (empty header)."""

    def __init__(self, websocket: Any) -> None:
        self._websocket = websocket

    def send(self, message: bytes | str) -> None:
        """Queue ``message`` with an empty header."""
        data = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        self._websocket.send(b"\n" + data)


def send_backlog(subscriber: Any, connection: redis.Redis, websocket: Any) -> None:
    """Queue what an opt-in connection receives before live messages.

    On a first connection: the persisted messages (with an empty header), then the sync.  On a
    reconnection: the gap notice if any, the missed messages, then the sync.
    """
    cursor: HistoryCursor = subscriber.history
    if cursor.positions is None:
        subscriber.send_persisted_messages(Enveloped(websocket))
    cursor.replay(connection, subscriber.subscriptions, websocket)


def validate(value: Any) -> dict[str, int] | None:
    """Check ``WS4REDIS_HISTORY``: ``None`` or ``{"size": int > 0, "ttl": int > 0}``."""
    from django.core.exceptions import ImproperlyConfigured

    if value is None:
        return None
    problem = "WS4REDIS_HISTORY must be None or a dict {'size': entries > 0, 'ttl': seconds > 0}"
    if not isinstance(value, dict) or set(value) != {"size", "ttl"}:
        raise ImproperlyConfigured(problem + ".")
    for name in ("size", "ttl"):
        number = value[name]
        if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
            raise ImproperlyConfigured(f"{problem}; {name} is {number!r}.")
    return {"size": value["size"], "ttl": value["ttl"]}
