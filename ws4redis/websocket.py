"""A sans-I/O codec for the server side of RFC 6455 WebSockets.

Nothing here touches a socket: bytes go in, events and bytes come out, so the same code serves
every binding (uWSGI, gevent, tests) and can be tested byte for byte.

* The opening handshake: :func:`check_handshake` validates a WSGI environ and returns a
  :class:`Handshake`; :func:`handshake_response_headers` builds the ``101`` reply headers.
* Framing: :func:`encode_frame` and its shortcuts (:func:`encode_message`, :func:`encode_close`,
  :func:`encode_ping`, :func:`encode_pong`) build frames; :class:`FrameDecoder` splits a byte
  stream into :class:`Frame` objects.
* The connection: :class:`WebSocketProtocol` turns frames into :class:`Message`, :class:`Ping`,
  :class:`Pong` and :class:`Close` events, reassembles fragmented messages, validates UTF-8 and
  enforces the message size limit.

Violations raise :class:`~ws4redis.exceptions.ProtocolError` (or its subclasses) carrying the
close code; a refused handshake raises :class:`~ws4redis.exceptions.HandshakeError` carrying the
HTTP status.  No extension (such as permessage-deflate) is ever negotiated, so the RSV bits must
always be zero.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import enum
import hashlib
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from .exceptions import (
    HandshakeError,
    InvalidUTF8Error,
    MessageTooBigError,
    ProtocolError,
    UpgradeRequiredError,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HAS_WSACCEL",
    "MAX_CONTROL_PAYLOAD",
    "Close",
    "CloseCode",
    "Event",
    "Frame",
    "FrameDecoder",
    "Handshake",
    "Message",
    "Opcode",
    "Ping",
    "Pong",
    "Utf8Validator",
    "WebSocketProtocol",
    "accept_key",
    "check_handshake",
    "encode_close",
    "encode_frame",
    "encode_message",
    "encode_ping",
    "encode_pong",
    "handshake_response_headers",
    "is_valid_close_code",
    "is_valid_utf8",
    "mask_payload",
    "select_subprotocol",
]


class Opcode(enum.IntEnum):
    """Frame opcodes defined by RFC 6455 §5.2; every other value is reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    """Close status codes of RFC 6455 §7.4.1 and the IANA registry."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20
"""Largest message accepted by default, in bytes, counting all of its fragments."""

MAX_CONTROL_PAYLOAD: Final = 125
"""Largest payload of a control frame (close, ping, pong), RFC 6455 §5.5."""

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Plain ints for the hot path: comparing against enum members costs an attribute lookup.
_CONTINUATION: Final = int(Opcode.CONTINUATION)
_TEXT: Final = int(Opcode.TEXT)
_BINARY: Final = int(Opcode.BINARY)
_CLOSE: Final = int(Opcode.CLOSE)
_PING: Final = int(Opcode.PING)
_PONG: Final = int(Opcode.PONG)
_KNOWN_OPCODES: Final = frozenset(int(op) for op in Opcode)
# First header bytes of the data frames a peer may send: no RSV bit, FIN set or not.
_DATA_FIRST_BYTES: Final = frozenset(fin | op for fin in (0, 0x80) for op in (0, 1, 2))
# The frame byte of a final, unfragmented text or binary frame.
_FINAL_TEXT: Final = 0x80 | _TEXT
_FINAL_BINARY: Final = 0x80 | _BINARY

_BytesLike: TypeAlias = bytes | bytearray | memoryview


# --------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class Message:
    """A complete data message; a text payload stays bytes, already validated as UTF-8."""

    payload: bytes
    is_text: bool


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping from the peer; answer it with :meth:`WebSocketProtocol.pong_for`."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong from the peer, solicited or not."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer's close frame: ``code`` is ``None`` when the frame carried no status."""

    code: int | None
    reason: str


Event: TypeAlias = Message | Ping | Pong | Close
"""What :meth:`WebSocketProtocol.receive_data` returns."""


# --------------------------------------------------------------------------------------------
# Masking


_TRANSLATE_THRESHOLD: Final = 1024
"""From this payload size on, pure-Python masking uses ``bytes.translate``, not integers."""


def _mask_python(payload: _BytesLike, mask: _BytesLike) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``mask`` without wsaccel.

    Below 1 KiB one big-integer XOR is the fastest; above, converting to and from integers
    costs more than four ``bytes.translate`` passes, one per byte position modulo 4.
    """
    size = len(payload)
    if size >= _TRANSLATE_THRESHOLD:
        result = bytearray(payload)
        for lane in range(4):
            result[lane::4] = result[lane::4].translate(_XOR_TABLES[mask[lane]])
        return bytes(result)
    if not size:
        return b""
    key = (bytes(mask) * ((size >> 2) + 1))[:size]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return masked.to_bytes(size, "little")


# _XOR_TABLES[k] maps every byte b to b ^ k, for bytes.translate (built by the integer path).
_XOR_TABLES: Final = tuple(_mask_python(bytes(range(256)), bytes((k,)) * 4) for k in range(256))


_mask_wsaccel: Callable[[_BytesLike, _BytesLike], bytes] | None
try:
    from wsaccel.xormask import XorMaskerSimple  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - wsaccel is optional at run time
    _mask_wsaccel = None
else:

    def _mask_wsaccel(payload: _BytesLike, mask: _BytesLike) -> bytes:
        """XOR ``payload`` with the repeated 4-byte ``mask`` in C, through wsaccel."""
        masked: bytes = XorMaskerSimple(mask).process(payload)
        return masked


HAS_WSACCEL: Final[bool] = _mask_wsaccel is not None
_mask: Final = _mask_wsaccel or _mask_python


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """Mask or unmask ``payload`` with a 4-byte ``mask`` (RFC 6455 §5.3); wsaccel if present."""
    if len(mask) != 4:
        raise ValueError("a WebSocket mask is exactly 4 bytes")
    return _mask(payload, mask)


# --------------------------------------------------------------------------------------------
# UTF-8


def is_valid_utf8(data: bytes) -> bool:
    """Tell whether ``data`` is strict UTF-8 (RFC 3629: no overlongs, surrogates or > U+10FFFF)."""
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_Utf8Decoder: Final = codecs.getincrementaldecoder("utf-8")


class Utf8Validator:
    """Validate UTF-8 fed in pieces, failing as soon as the bytes so far cannot be valid.

    CPython's incremental decoder enforces RFC 3629 in C, but it keeps ``ED A0`` to ``ED BF``
    pending until the third byte arrives although no valid character starts that way (they
    encode surrogates); :meth:`feed` rejects that prefix itself.
    """

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = _Utf8Decoder("strict")

    def feed(self, data: bytes, final: bool = False) -> None:
        """Validate the next piece; ``final`` says no more bytes follow.

        Raises :class:`~ws4redis.exceptions.InvalidUTF8Error` if the bytes fed so far cannot
        begin valid UTF-8, or, when ``final``, if they end inside a character.
        """
        try:
            self._decoder.decode(data, final)
        except UnicodeDecodeError:
            raise InvalidUTF8Error() from None
        pending: bytes = self._decoder.getstate()[0]
        if len(pending) == 2 and pending[0] == 0xED and pending[1] >= 0xA0:
            raise InvalidUTF8Error()


# --------------------------------------------------------------------------------------------
# Encoding

_PACK_16: Final = struct.Struct("!BBH").pack
_PACK_64: Final = struct.Struct("!BBQ").pack
_UNPACK_16: Final = struct.Struct("!H").unpack_from
_UNPACK_64: Final = struct.Struct("!Q").unpack_from

# Two-byte headers of every final, unmasked frame with a 7-bit length: _SHORT[opcode][length].
_SHORT_HEADERS: Final = tuple(
    tuple(bytes((0x80 | opcode, length)) for length in range(126)) for opcode in range(16)
)


def _header(first: int, mask_bit: int, size: int) -> bytes:
    """Build the header of a frame with ``size`` payload bytes, without the masking key."""
    if size < 126:
        return bytes((first, mask_bit | size))
    if size < 0x10000:
        return _PACK_16(first, mask_bit | 126, size)
    return _PACK_64(first, mask_bit | 127, size)


def _server_frame(opcode: int, payload: bytes) -> bytes:
    """Build a final, unmasked frame: the shape of every frame a server sends."""
    size = len(payload)
    if size < 126:
        return _SHORT_HEADERS[opcode][size] + payload
    if size < 0x10000:
        return _PACK_16(0x80 | opcode, 126, size) + payload
    return _PACK_64(0x80 | opcode, 127, size) + payload


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
) -> bytes:
    """Encode one frame of any payload length (7-, 16- or 64-bit length forms).

    Servers send unmasked frames; pass a 4-byte ``mask`` to build a client frame.  Nothing
    beyond the field ranges is checked, so tests can build invalid frames on purpose.
    """
    if not 0 <= opcode <= 0xF:
        raise ValueError("opcode must be in 0..15")
    if not 0 <= rsv <= 7:
        raise ValueError("rsv must be in 0..7")
    if mask is None:
        if fin and not rsv:
            return _server_frame(opcode, payload)
        return _header((0x80 if fin else 0) | rsv << 4 | opcode, 0, len(payload)) + payload
    if len(mask) != 4:
        raise ValueError("a WebSocket mask is exactly 4 bytes")
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    return _header(first, 0x80, len(payload)) + mask + _mask(payload, mask)


def encode_message(payload: bytes | str, is_text: bool | None = None) -> bytes:
    """Encode a server data message as one final, unmasked frame.

    A ``str`` is sent as UTF-8 text (as binary if ``is_text`` is ``False``).  For bytes,
    ``is_text=None`` picks text when the payload is valid UTF-8 and binary otherwise;
    ``is_text=True`` with invalid UTF-8 raises :class:`ValueError`.
    """
    if isinstance(payload, str):
        data = payload.encode("utf-8")
        return _server_frame(_BINARY if is_text is False else _TEXT, data)
    if is_text is None:
        is_text = is_valid_utf8(payload)
    elif is_text and not is_valid_utf8(payload):
        raise ValueError("a text message must be valid UTF-8")
    return _server_frame(_TEXT if is_text else _BINARY, payload)


def is_valid_close_code(code: int) -> bool:
    """Tell whether ``code`` may appear in a close frame (RFC 6455 §7.4 and IANA registry).

    Valid: 1000-1003, 1007-1014 and 3000-4999.  Never on the wire: 1004 (reserved), 1005 and
    1006 (local only), 1015 (TLS failure), the unassigned 1016-2999, and anything below 1000
    or above 4999.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _truncate_utf8(text: str, limit: int) -> bytes:
    """Encode ``text`` as UTF-8 and cut it to at most ``limit`` bytes on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")


def encode_close(code: int | None = 1000, reason: str = "") -> bytes:
    """Encode a close frame; ``code=None`` sends an empty payload (and allows no reason).

    The reason is cut on a UTF-8 character boundary so the payload fits in 125 bytes.
    Codes that must never be sent (see :func:`is_valid_close_code`) raise :class:`ValueError`.
    """
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return _SHORT_HEADERS[_CLOSE][0]
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} must not be sent")
    payload = code.to_bytes(2, "big") + _truncate_utf8(reason, MAX_CONTROL_PAYLOAD - 2)
    return _server_frame(_CLOSE, payload)


def _control_payload(payload: bytes) -> bytes:
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError("a control frame payload is at most 125 bytes")
    return payload


def encode_ping(payload: bytes = b"") -> bytes:
    """Encode a server ping; the payload is at most 125 bytes."""
    return _server_frame(_PING, _control_payload(payload))


def encode_pong(payload: bytes = b"") -> bytes:
    """Encode a server pong; the payload is at most 125 bytes."""
    return _server_frame(_PONG, _control_payload(payload))


# --------------------------------------------------------------------------------------------
# Decoding frames


@dataclass(slots=True)
class Frame:
    """One decoded frame; ``payload`` is already unmasked."""

    opcode: int
    payload: bytes
    fin: bool
    rsv: int
    masked: bool


# Payloads from this size on are unmasked from a view of the buffer rather than a copy of it.
_VIEW_THRESHOLD: Final = 4096


class FrameDecoder:
    """Split a byte stream into :class:`Frame` objects (RFC 6455 §5.2).

    :meth:`feed` bytes as they arrive, cut anywhere, then call :meth:`next_frame` until it
    returns ``None``.  The header is checked as soon as its first two bytes are in, and
    ``max_payload`` is enforced from the declared length, before any payload is buffered.
    ``max_payload`` limits data frames only: control frames are limited to 125 bytes anyway.
    A non-minimal length encoding is accepted (RFC 6455 does not require failing on it).
    """

    __slots__ = ("_buffer", "_offset", "max_payload", "require_mask")

    def __init__(self, *, require_mask: bool = True, max_payload: int | None = None) -> None:
        self.require_mask = require_mask
        self.max_payload = max_payload
        # What is being parsed: the last ``bytes`` fed, or a bytearray holding a frame that
        # arrived in pieces; ``_offset`` is where its unconsumed bytes start.
        self._buffer: bytes | bytearray = b""
        self._offset = 0

    def feed(self, data: bytes) -> None:
        """Append received bytes; consumed bytes are dropped here, once per feed.

        When everything fed before has been consumed (the usual case: reads hold whole
        frames), ``data`` is parsed where it is, without being copied into a buffer.
        """
        buffer = self._buffer
        offset = self._offset
        if offset >= len(buffer):
            self._buffer = data if type(data) is bytes else bytes(data)
        elif isinstance(buffer, bytearray):
            if offset:
                del buffer[:offset]  # O(1) in CPython: it moves the start pointer
            buffer += data
        else:  # a frame began in the previous read: start buffering
            self._buffer = bytearray(memoryview(buffer)[offset:])
            self._buffer += data
        self._offset = 0

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or ``None`` until more bytes are fed.

        Raises :class:`~ws4redis.exceptions.ProtocolError` (1002) for a malformed header and
        :class:`~ws4redis.exceptions.MessageTooBigError` (1009) for an oversized data frame.
        """
        frame = self._next()
        if frame is None:
            return None
        first, masked, payload = frame
        return Frame(first & 0x0F, payload, first > 0x7F, (first >> 4) & 7, masked)

    def _next(self) -> tuple[int, bool, bytes] | None:
        """:meth:`next_frame` as a tuple: the first header byte, whether masked, the payload.

        The hot path of :class:`WebSocketProtocol`: one call per frame, no object built.
        """
        buffer = self._buffer
        start = self._offset
        available = len(buffer) - start
        if available < 2:
            return None
        first = buffer[start]
        second = buffer[start + 1]
        size = second & 0x7F
        if second < 0x80 or first not in _DATA_FIRST_BYTES:  # all but masked data frames
            self._check_header(first, second, size)
        if size < 126:
            begin = start + 2
        elif size == 126:
            if available < 4:
                return None
            size = _UNPACK_16(buffer, start + 2)[0]
            begin = start + 4
        else:
            if available < 10:
                return None
            size = _UNPACK_64(buffer, start + 2)[0]
            if size >> 63:
                raise ProtocolError("frame length has its most significant bit set")
            begin = start + 10
        if self.max_payload is not None and size > self.max_payload and not first & 0x08:
            raise MessageTooBigError()
        if second < 0x80:
            end = begin + size
            if len(buffer) < end:
                return None
            self._offset = end
            payload = buffer[begin:end]
            return first, False, payload if type(payload) is bytes else bytes(payload)
        begin += 4
        end = begin + size
        if len(buffer) < end:
            return None
        self._offset = end
        if size < _VIEW_THRESHOLD:
            return first, True, _mask(buffer[begin:end], buffer[begin - 4 : begin])
        with memoryview(buffer) as view:  # no copy of a large payload before unmasking it
            return first, True, _mask(view[begin:end], view[begin - 4 : begin])

    def _check_header(self, first: int, second: int, size: int) -> None:
        """Raise :class:`ProtocolError` for a first header pair no valid frame can have."""
        opcode = first & 0x0F
        if first & 0x70:
            raise ProtocolError("reserved bits set without a negotiated extension")
        if opcode not in _KNOWN_OPCODES:
            raise ProtocolError("reserved opcode")
        if self.require_mask and not second & 0x80:
            raise ProtocolError("client frame is not masked")
        if opcode >= _CLOSE:
            if size > MAX_CONTROL_PAYLOAD:
                raise ProtocolError("control frame payload longer than 125 bytes")
            if not first & 0x80:
                raise ProtocolError("fragmented control frame")


# --------------------------------------------------------------------------------------------
# The connection


def _parse_close(payload: bytes) -> Close:
    """Turn a close frame payload into a :class:`Close`, validating its code and reason."""
    if not payload:
        return Close(None, "")
    if len(payload) == 1:
        raise ProtocolError("close frame payload of 1 byte")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError("invalid close code")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidUTF8Error("invalid UTF-8 in close reason") from None
    return Close(code, reason)


class WebSocketProtocol:
    """The server side of one WebSocket connection, without I/O.

    Feed received bytes to :meth:`receive_data` and act on the events it returns; send the
    bytes from :meth:`pong_for`, :meth:`send_close` and the ``encode_*`` functions.

    When :meth:`receive_data` raises :class:`~ws4redis.exceptions.ProtocolError`, fail the
    connection: send ``send_close(err.close_code, err.reason)`` (that is
    ``encode_close(err.close_code, err.reason)``) and close the TCP connection.  Events decoded
    from the same call before the violation are kept in :attr:`events_before_error`; later
    input is ignored.  Input that follows the peer's close frame is ignored too.
    """

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        require_mask: bool = True,
    ) -> None:
        self.max_message_size = max_message_size
        #: Events decoded by the ``receive_data`` call that raised, before the violation.
        self.events_before_error: list[Event] = []
        self._decoder = FrameDecoder(require_mask=require_mask, max_payload=max_message_size)
        self._closed_by_peer = False
        self._close_sent = False
        self._failed = False
        self._message_opcode: int | None = None  # of the fragmented message in progress
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._utf8: Utf8Validator | None = None

    @property
    def closed_by_peer(self) -> bool:
        """Whether the peer's close frame has been received."""
        return self._closed_by_peer

    @property
    def close_sent(self) -> bool:
        """Whether :meth:`send_close` has produced our close frame."""
        return self._close_sent

    def receive_data(self, data: bytes) -> list[Event]:
        """Decode ``data`` and return every event it completes, in order.

        Control frames come out as soon as they arrive, even between the fragments of a
        message.  Raises :class:`~ws4redis.exceptions.ProtocolError` with the close code to
        send when the peer breaks the protocol or the size limit.
        """
        if self._closed_by_peer or self._failed:
            return []
        events: list[Event] = []
        decoder = self._decoder
        decoder.feed(data)
        next_frame = decoder._next
        try:
            while (frame := next_frame()) is not None:
                first, _, payload = frame
                # The usual frame, a whole message in one frame, is handled right here.
                if first == _FINAL_BINARY and self._message_opcode is None:
                    events.append(Message(payload, False))
                elif first == _FINAL_TEXT and self._message_opcode is None:
                    if not (payload.isascii() or is_valid_utf8(payload)):
                        raise InvalidUTF8Error()
                    events.append(Message(payload, True))
                elif (event := self._handle(first, payload)) is not None:
                    events.append(event)
                    if type(event) is Close:
                        self._closed_by_peer = True
                        break
        except ProtocolError:
            self._failed = True
            self.events_before_error = events
            raise
        return events

    def send_close(self, code: int | None = 1000, reason: str = "") -> bytes:
        """Return our close frame the first time, ``b""`` afterwards."""
        if self._close_sent:
            return b""
        self._close_sent = True
        return encode_close(code, reason)

    def pong_for(self, ping: Ping) -> bytes:
        """Return the pong that answers ``ping``, echoing its payload."""
        return encode_pong(ping.payload)

    def _handle(self, first: int, payload: bytes) -> Event | None:
        """Turn one frame into an event, or ``None`` for a non-final fragment."""
        opcode = first & 0x0F
        fin = first > 0x7F
        if opcode >= _CLOSE:
            return self._control(opcode, payload)
        if opcode == _CONTINUATION:
            if self._message_opcode is None:
                raise ProtocolError("continuation frame without a message to continue")
        elif self._message_opcode is not None:
            raise ProtocolError("new data frame before the fragmented message was finished")
        elif fin:
            if opcode == _TEXT and not is_valid_utf8(payload):
                raise InvalidUTF8Error()
            return Message(payload, opcode == _TEXT)
        else:
            self._message_opcode = opcode
            self._utf8 = Utf8Validator() if opcode == _TEXT else None
        return self._add_fragment(payload, fin)

    def _add_fragment(self, payload: bytes, fin: bool) -> Message | None:
        """Add a fragment to the message in progress; return the message once it is final."""
        if self._utf8 is not None:
            self._utf8.feed(payload, fin)
        self._fragments.append(payload)
        self._fragments_size += len(payload)
        if not fin:
            # The next fragment may not take the message past the limit: let the decoder
            # refuse it from its header, before its payload is buffered.
            self._decoder.max_payload = self.max_message_size - self._fragments_size
            return None
        message = Message(b"".join(self._fragments), self._message_opcode == _TEXT)
        self._message_opcode = None
        self._fragments = []
        self._fragments_size = 0
        self._utf8 = None
        self._decoder.max_payload = self.max_message_size
        return message

    def _control(self, opcode: int, payload: bytes) -> Event:
        """Turn a control frame into its event."""
        if opcode == _PING:
            return Ping(payload)
        if opcode == _PONG:
            return Pong(payload)
        return _parse_close(payload)


# --------------------------------------------------------------------------------------------
# The opening handshake


@dataclass(frozen=True, slots=True)
class Handshake:
    """A valid client handshake: the key to answer and what the client offered."""

    key: str
    protocols: tuple[str, ...]
    origin: str | None
    host: str | None


_UPGRADE_REASON: Final = "Expected an Upgrade: websocket request"
_HTTP_VERSION: Final = re.compile(r"HTTP/(\d+)(?:\.(\d+))?", re.ASCII | re.IGNORECASE)


def accept_key(key: str) -> str:
    """Compute ``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1(key.encode("latin-1") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def _header_value(environ: Mapping[str, Any], name: str) -> str:
    value = environ.get(name)
    return "" if value is None else str(value).strip()


def _tokens(value: str) -> set[str]:
    """The lower-cased tokens of a comma-separated header value."""
    return {token.strip().lower() for token in value.split(",")}


def _http_version_ok(protocol: str) -> bool:
    match = _HTTP_VERSION.fullmatch(protocol)
    if match is None:
        return False
    return (int(match[1]), int(match[2] or 0)) >= (1, 1)


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _check_request_line(environ: Mapping[str, Any]) -> None:
    if _header_value(environ, "REQUEST_METHOD") != "GET":
        raise HandshakeError(
            "WebSocket handshake must use GET", status=405, headers=[("Allow", "GET")]
        )
    if not _http_version_ok(_header_value(environ, "SERVER_PROTOCOL")):
        raise HandshakeError("WebSocket handshake requires HTTP/1.1 or later")


def _check_upgrade(environ: Mapping[str, Any]) -> None:
    if "websocket" not in _tokens(_header_value(environ, "HTTP_UPGRADE")):
        raise HandshakeError(_UPGRADE_REASON)
    if "upgrade" not in _tokens(_header_value(environ, "HTTP_CONNECTION")):
        raise HandshakeError(_UPGRADE_REASON)


def check_handshake(environ: Mapping[str, Any]) -> Handshake:
    """Validate the client's opening handshake in a WSGI ``environ`` (RFC 6455 §4.2.1).

    Raises :class:`~ws4redis.exceptions.HandshakeError`: 405 (with ``Allow: GET``) for another
    method, 400 for an HTTP version below 1.1, a missing ``Upgrade: websocket`` or
    ``Connection: upgrade``, or a missing or malformed key, and
    :class:`~ws4redis.exceptions.UpgradeRequiredError` (426) unless the version is 13.
    """
    _check_request_line(environ)
    _check_upgrade(environ)
    key = _header_value(environ, "HTTP_SEC_WEBSOCKET_KEY")
    if not _valid_key(key):
        raise HandshakeError("Missing or invalid Sec-WebSocket-Key")
    if _header_value(environ, "HTTP_SEC_WEBSOCKET_VERSION") != "13":
        raise UpgradeRequiredError()
    offered = _header_value(environ, "HTTP_SEC_WEBSOCKET_PROTOCOL").split(",")
    return Handshake(
        key=key,
        protocols=tuple(p.strip() for p in offered if p.strip()),
        origin=_header_value(environ, "HTTP_ORIGIN") or None,
        host=_header_value(environ, "HTTP_HOST") or None,
    )


def select_subprotocol(protocols: Iterable[str]) -> str | None:
    """Pick the subprotocol to answer with: the first one the client offered, if any."""
    return next(iter(protocols), None)


def handshake_response_headers(
    handshake: Handshake, subprotocol: str | None
) -> list[tuple[str, str]]:
    """Headers of the ``101 Switching Protocols`` reply to ``handshake``.

    ``subprotocol`` must be one the client offered (or ``None``); it is answered alone.
    """
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(handshake.key)),
    ]
    if subprotocol is not None:
        if subprotocol not in handshake.protocols:
            raise ValueError("the subprotocol must be one the client offered")
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    return headers
