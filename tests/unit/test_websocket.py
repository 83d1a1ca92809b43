"""Byte-exact tests of the sans-I/O RFC 6455 codec in ``ws4redis.websocket``."""

from __future__ import annotations

import ast
import dataclasses
import os
import struct
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from ws4redis import websocket
from ws4redis.exceptions import (
    HandshakeError,
    InvalidUTF8Error,
    MessageTooBigError,
    ProtocolError,
    UpgradeRequiredError,
)
from ws4redis.websocket import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_CONTROL_PAYLOAD,
    Close,
    CloseCode,
    Event,
    Frame,
    FrameDecoder,
    Handshake,
    Message,
    Opcode,
    Ping,
    Pong,
    Utf8Validator,
    WebSocketProtocol,
    accept_key,
    check_handshake,
    encode_close,
    encode_frame,
    encode_message,
    encode_ping,
    encode_pong,
    handshake_response_headers,
    is_valid_close_code,
    is_valid_utf8,
    mask_payload,
    select_subprotocol,
)

MASK = bytes.fromhex("37fa213d")  # the masking key of RFC 6455 §5.7


def client(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked frame, as a browser would send it."""
    return encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=MASK)


def receive(data: bytes, **options: Any) -> list[Event]:
    return WebSocketProtocol(**options).receive_data(data)


def protocol_error(data: bytes, **options: Any) -> ProtocolError:
    """Feed ``data`` to a fresh connection and return the error it must raise."""
    with pytest.raises(ProtocolError) as info:
        WebSocketProtocol(**options).receive_data(data)
    return info.value


def reference_mask(payload: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class TestConstants:
    def test_opcodes(self) -> None:
        assert [int(op) for op in Opcode] == [0, 1, 2, 8, 9, 10]
        assert int(Opcode.PONG) == 0xA

    def test_close_codes(self) -> None:
        assert {c.name: int(c) for c in CloseCode} == {
            "NORMAL": 1000,
            "GOING_AWAY": 1001,
            "PROTOCOL_ERROR": 1002,
            "UNSUPPORTED_DATA": 1003,
            "NO_STATUS": 1005,
            "ABNORMAL": 1006,
            "INVALID_DATA": 1007,
            "POLICY_VIOLATION": 1008,
            "MESSAGE_TOO_BIG": 1009,
            "MANDATORY_EXTENSION": 1010,
            "INTERNAL_ERROR": 1011,
            "SERVICE_RESTART": 1012,
            "TRY_AGAIN_LATER": 1013,
        }

    def test_limits(self) -> None:
        assert DEFAULT_MAX_MESSAGE_SIZE == 1048576
        assert MAX_CONTROL_PAYLOAD == 125

    def test_events_are_frozen(self) -> None:
        message = Message(b"x", True)
        with pytest.raises(dataclasses.FrozenInstanceError):
            message.payload = b"y"  # type: ignore[misc]
        assert Close(None, "") == Close(None, "")


class TestFrameLengths:
    """RFC 6455 §5.2: 7-bit, 16-bit and 64-bit payload length forms."""

    CASES = [
        (0, "8200"),
        (125, "827d"),
        (126, "827e007e"),
        (127, "827e007f"),
        (65535, "827effff"),
        (65536, "827f0000000000010000"),
    ]

    @pytest.mark.parametrize(("size", "header"), CASES)
    def test_encode_unmasked(self, size: int, header: str) -> None:
        payload = bytes(i % 251 for i in range(size))
        assert encode_frame(Opcode.BINARY, payload) == bytes.fromhex(header) + payload

    @pytest.mark.parametrize(("size", "header"), CASES)
    def test_encode_masked(self, size: int, header: str) -> None:
        payload = bytes(i % 251 for i in range(size))
        expected = bytearray.fromhex(header)
        expected[1] |= 0x80
        frame = encode_frame(Opcode.BINARY, payload, mask=MASK)
        assert frame == bytes(expected) + MASK + reference_mask(payload, MASK)

    @pytest.mark.parametrize(("size", "header"), CASES)
    def test_decode_unmasked(self, size: int, header: str) -> None:
        payload = bytes(i % 251 for i in range(size))
        decoder = FrameDecoder(require_mask=False)
        decoder.feed(bytes.fromhex(header) + payload)
        assert decoder.next_frame() == Frame(2, payload, True, 0, False)
        assert decoder.next_frame() is None

    @pytest.mark.parametrize(("size", "header"), CASES)
    def test_decode_masked(self, size: int, header: str) -> None:
        payload = bytes(i % 251 for i in range(size))
        assert receive(client(Opcode.BINARY, payload)) == [Message(payload, False)]

    def test_incomplete_frame_waits(self) -> None:
        decoder = FrameDecoder(require_mask=False)
        frame = encode_frame(Opcode.BINARY, b"x" * 300)
        decoder.feed(frame[:-1])
        assert decoder.next_frame() is None
        decoder.feed(frame[-1:])
        assert decoder.next_frame() == Frame(2, b"x" * 300, True, 0, False)

    def test_non_minimal_lengths_are_accepted(self) -> None:
        decoder = FrameDecoder(require_mask=False)
        decoder.feed(bytes.fromhex("827e0005") + b"abcde")
        decoder.feed(bytes.fromhex("827f0000000000000003") + b"xyz")
        assert decoder.next_frame() == Frame(2, b"abcde", True, 0, False)
        assert decoder.next_frame() == Frame(2, b"xyz", True, 0, False)

    def test_64_bit_length_with_top_bit_is_refused_from_the_header(self) -> None:
        decoder = FrameDecoder()
        decoder.feed(bytes.fromhex("82ff8000000000000005"))
        with pytest.raises(ProtocolError) as info:
            decoder.next_frame()
        assert info.value.close_code == 1002

    def test_several_frames_in_one_feed(self) -> None:
        decoder = FrameDecoder()
        decoder.feed(client(Opcode.TEXT, b"a") + client(Opcode.PING, b"b") + client(0, b"c"))
        frames = [decoder.next_frame() for _ in range(4)]
        assert frames == [
            Frame(1, b"a", True, 0, True),
            Frame(9, b"b", True, 0, True),
            Frame(0, b"c", True, 0, True),
            None,
        ]


class TestRfcExamples:
    """The example frames of RFC 6455 §5.7."""

    def test_unmasked_hello(self) -> None:
        expected = bytes.fromhex("810548656c6c6f")
        assert encode_message("Hello") == expected
        assert encode_frame(Opcode.TEXT, b"Hello") == expected
        assert receive(expected, require_mask=False) == [Message(b"Hello", True)]

    def test_masked_hello(self) -> None:
        expected = bytes.fromhex("818537fa213d7f9f4d5158")
        assert encode_frame(Opcode.TEXT, b"Hello", mask=MASK) == expected
        assert receive(expected) == [Message(b"Hello", True)]

    def test_fragmented_hello(self) -> None:
        first = bytes.fromhex("010348656c")
        second = bytes.fromhex("80026c6f")
        assert encode_frame(Opcode.TEXT, b"Hel", fin=False) == first
        assert encode_frame(Opcode.CONTINUATION, b"lo") == second
        assert receive(first + second, require_mask=False) == [Message(b"Hello", True)]

    def test_ping_and_masked_pong(self) -> None:
        assert encode_ping(b"Hello") == bytes.fromhex("890548656c6c6f")
        pong = bytes.fromhex("8a8537fa213d7f9f4d5158")
        assert encode_frame(Opcode.PONG, b"Hello", mask=MASK) == pong
        assert receive(pong) == [Pong(b"Hello")]

    def test_256_byte_binary(self) -> None:
        payload = bytes(range(256))
        assert encode_message(payload, is_text=False) == bytes.fromhex("827e0100") + payload

    def test_64_kib_binary(self) -> None:
        payload = bytes(65536)
        frame = encode_message(payload, is_text=False)
        assert frame[:10] == bytes.fromhex("827f0000000000010000")
        assert len(frame) == 65546


class TestSplitFeeding:
    """The same stream gives the same events whatever the cut points."""

    STREAM = (
        client(Opcode.TEXT, b"Hello")
        + client(Opcode.TEXT, "caf\u00e9 \u20ac".encode()[:5], fin=False)
        + client(Opcode.PING, b"ping")
        + client(Opcode.CONTINUATION, "caf\u00e9 \u20ac".encode()[5:])
        + client(Opcode.BINARY, bytes(range(256)) * 2)
        + client(Opcode.PONG)
        + client(Opcode.CLOSE, struct.pack("!H", 1001) + b"bye")
    )
    EXPECTED = [
        Message(b"Hello", True),
        Ping(b"ping"),
        Message("caf\u00e9 \u20ac".encode(), True),
        Message(bytes(range(256)) * 2, False),
        Pong(b""),
        Close(1001, "bye"),
    ]

    def test_one_feed(self) -> None:
        assert receive(self.STREAM) == self.EXPECTED

    def test_split_at_every_offset(self) -> None:
        for offset in range(len(self.STREAM) + 1):
            ws = WebSocketProtocol()
            events = ws.receive_data(self.STREAM[:offset]) + ws.receive_data(self.STREAM[offset:])
            assert events == self.EXPECTED, offset

    def test_byte_by_byte(self) -> None:
        ws = WebSocketProtocol()
        events: list[Event] = []
        for index in range(len(self.STREAM)):
            events += ws.receive_data(self.STREAM[index : index + 1])
        assert events == self.EXPECTED

    def test_64_bit_frame_split_in_header_and_payload(self) -> None:
        payload = os.urandom(70000)
        stream = client(Opcode.BINARY, payload) + client(Opcode.TEXT, b"next")
        for offset in [*range(16), 20000, 70013, 70014, 70015, len(stream) - 1]:
            ws = WebSocketProtocol()
            events = ws.receive_data(stream[:offset]) + ws.receive_data(stream[offset:])
            assert events == [Message(payload, False), Message(b"next", True)], offset

    def test_large_frames_in_pieces_with_each_masker(
        self, monkeypatch: pytest.MonkeyPatch, masker: Callable[[bytes, bytes], bytes]
    ) -> None:
        """Large payloads are unmasked from a view of the buffer, which must not pin it."""
        monkeypatch.setattr(websocket, "_mask", masker)
        big = os.urandom(70000)
        stream = client(Opcode.BINARY, big) + client(Opcode.TEXT, b"next")
        cuts = [*range(0, 70000, 999), 70016, len(stream)]  # the big frame ends mid-feed
        ws = WebSocketProtocol()
        events: list[Event] = []
        for _ in range(2):
            events += ws.receive_data(stream)  # whole, parsed where it is
            for start, end in pairwise(cuts):  # in pieces, through the buffer
                events += ws.receive_data(stream[start:end])
        assert events == [Message(big, False), Message(b"next", True)] * 4

    def test_a_fed_buffer_may_be_reused_by_the_caller(self) -> None:
        frame = client(Opcode.BINARY, b"Hello, world")
        for kind in (bytearray, memoryview):
            decoder = FrameDecoder()
            first = bytearray(frame[:7])
            decoder.feed(kind(first))
            assert decoder.next_frame() is None
            first[:] = bytes(len(first))  # the caller reads the next chunk into it
            second = bytearray(frame[7:])
            decoder.feed(kind(second))
            second[:] = bytes(len(second))
            assert decoder.next_frame() == Frame(2, b"Hello, world", True, 0, True)


@pytest.fixture(params=["python", "wsaccel"])
def masker(request: pytest.FixtureRequest) -> Callable[[bytes, bytes], bytes]:
    """Each masking implementation; wsaccel is a dev dependency, so it must be there."""
    if request.param == "python":
        return websocket._mask_python
    implementation = websocket._mask_wsaccel
    assert implementation is not None, "wsaccel is not importable; it is a dev dependency"
    return implementation


class TestMasking:
    """RFC 6455 §5.3, through the pure-Python and the wsaccel implementations."""

    def test_rfc_example(self, masker: Callable[[bytes, bytes], bytes]) -> None:
        assert masker(b"Hello", MASK) == bytes.fromhex("7f9f4d5158")

    def test_empty(self, masker: Callable[[bytes, bytes], bytes]) -> None:
        assert masker(b"", MASK) == b""

    @pytest.mark.parametrize("size", [*range(1, 18), 125, 126, 1023, 1024, 1025, 4095, 65537])
    def test_against_reference(self, masker: Callable[[bytes, bytes], bytes], size: int) -> None:
        payload = bytes((i * 7 + 3) % 256 for i in range(size))
        mask = bytes.fromhex("a1b2c3d4")
        result = masker(payload, mask)
        assert type(result) is bytes
        assert result == reference_mask(payload, mask)
        assert masker(result, mask) == payload

    def test_leading_zero_bytes_are_kept(self, masker: Callable[[bytes, bytes], bytes]) -> None:
        assert masker(b"\x00\x00\x00\x00\x00", b"\x00\x00\x00\x00") == bytes(5)
        assert masker(b"\xff\xff\x01", b"\xff\xff\x00\x00") == b"\x00\x00\x01"

    def test_accepts_buffer_slices(self, masker: Callable[[Any, Any], bytes]) -> None:
        buffer = bytearray(b"..Hello..")
        assert masker(buffer[2:7], bytearray(MASK)) == bytes.fromhex("7f9f4d5158")
        payload = bytes(range(256)) * 8 + b"!"  # past the pure-Python translate threshold
        data = b".." + payload + b".."
        expected = reference_mask(payload, MASK)
        assert masker(bytearray(data)[2:-2], bytearray(MASK)) == expected
        assert masker(memoryview(data)[2:-2], memoryview(MASK)) == expected

    def test_public_function_uses_wsaccel(self) -> None:
        assert websocket.HAS_WSACCEL is True
        assert websocket._mask is websocket._mask_wsaccel
        assert mask_payload(b"Hello", MASK) == bytes.fromhex("7f9f4d5158")

    def test_mask_must_be_four_bytes(self) -> None:
        with pytest.raises(ValueError):
            mask_payload(b"Hello", b"abc")
        with pytest.raises(ValueError):
            encode_frame(Opcode.TEXT, b"Hello", mask=b"abcde")


class TestUtf8:
    VALID = [
        b"",
        b"hello",
        "h\u00e9llo".encode(),
        "\u20ac".encode(),
        "\U0001d11e".encode(),
        "\ud7ff".encode(),
        "\ue000".encode(),
        "\U0010ffff".encode(),
    ]
    INVALID = [
        "c0af",  # overlong "/"
        "e080af",  # overlong, three bytes
        "f08080af",  # overlong, four bytes
        "eda080",  # U+D800, a surrogate
        "edbfbf",  # U+DFFF, a surrogate
        "f4908080",  # U+110000
        "f5808080",  # never a lead byte
        "ff",
        "80",  # lone continuation byte
        "c3",  # truncated
        "e282",  # truncated
        "48656c6c6fc3",  # truncated at the end of valid text
    ]

    @pytest.mark.parametrize("data", VALID)
    def test_valid(self, data: bytes) -> None:
        assert is_valid_utf8(data) is True
        Utf8Validator().feed(data, True)

    @pytest.mark.parametrize("hex_data", INVALID)
    def test_invalid(self, hex_data: str) -> None:
        data = bytes.fromhex(hex_data)
        assert is_valid_utf8(data) is False
        with pytest.raises(InvalidUTF8Error):
            Utf8Validator().feed(data, True)

    def test_incremental_multibyte_byte_by_byte(self) -> None:
        validator = Utf8Validator()
        for byte in "\U0001d11e\u20ac".encode():
            validator.feed(bytes([byte]), False)
        validator.feed(b"", True)

    def test_incomplete_is_fine_until_final(self) -> None:
        validator = Utf8Validator()
        validator.feed(b"ab\xe2\x82", False)
        with pytest.raises(InvalidUTF8Error):
            validator.feed(b"", True)

    @pytest.mark.parametrize(
        ("first", "second"),
        [("ed", "a0"), ("ed", "bf"), ("f4", "90"), ("e0", "80"), ("f0", "80"), ("61", "c0")],
    )
    def test_fails_as_soon_as_prefix_is_impossible(self, first: str, second: str) -> None:
        validator = Utf8Validator()
        validator.feed(bytes.fromhex(first), False)
        with pytest.raises(InvalidUTF8Error) as info:
            validator.feed(bytes.fromhex(second), False)
        assert info.value.close_code == 1007

    def test_valid_text_message(self) -> None:
        text = "\u00e9\u20ac\U0001d11e".encode()
        assert receive(client(Opcode.TEXT, text)) == [Message(text, True)]

    @pytest.mark.parametrize("hex_data", ["c0af", "eda080", "f4908080", "ff", "e282"])
    def test_invalid_text_message(self, hex_data: str) -> None:
        error = protocol_error(client(Opcode.TEXT, bytes.fromhex(hex_data)))
        assert isinstance(error, InvalidUTF8Error)
        assert error.close_code == 1007

    def test_binary_message_is_not_validated(self) -> None:
        assert receive(client(Opcode.BINARY, b"\xc0\xaf")) == [Message(b"\xc0\xaf", False)]

    def test_character_split_across_fragments(self) -> None:
        euro = "\u20ac".encode()
        stream = (
            client(Opcode.TEXT, b"a" + euro[:1], fin=False)
            + client(Opcode.CONTINUATION, euro[1:2], fin=False)
            + client(Opcode.CONTINUATION, euro[2:])
        )
        assert receive(stream) == [Message(b"a" + euro, True)]

    def test_invalid_byte_detected_before_message_is_complete(self) -> None:
        ws = WebSocketProtocol()
        assert ws.receive_data(client(Opcode.TEXT, b"ok", fin=False)) == []
        with pytest.raises(InvalidUTF8Error):
            ws.receive_data(client(Opcode.CONTINUATION, b"\xc0", fin=False))

    def test_surrogate_split_across_fragments_detected_early(self) -> None:
        ws = WebSocketProtocol()
        assert ws.receive_data(client(Opcode.TEXT, b"a\xed", fin=False)) == []
        with pytest.raises(InvalidUTF8Error):
            ws.receive_data(client(Opcode.CONTINUATION, b"\xa0", fin=False))

    def test_fragmented_message_ending_mid_character(self) -> None:
        stream = client(Opcode.TEXT, b"a", fin=False) + client(Opcode.CONTINUATION, b"\xe2\x82")
        assert protocol_error(stream).close_code == 1007


class TestControlFrames:
    """RFC 6455 §5.5."""

    def test_ping_is_answered_with_its_payload(self) -> None:
        ws = WebSocketProtocol()
        events = ws.receive_data(client(Opcode.PING, b"abc"))
        assert events == [Ping(b"abc")]
        assert ws.pong_for(Ping(b"abc")) == bytes.fromhex("8a03616263")

    def test_empty_ping(self) -> None:
        ws = WebSocketProtocol()
        assert ws.receive_data(client(Opcode.PING)) == [Ping(b"")]
        assert ws.pong_for(Ping(b"")) == bytes.fromhex("8a00")

    def test_125_byte_ping(self) -> None:
        assert receive(client(Opcode.PING, b"p" * 125)) == [Ping(b"p" * 125)]

    def test_126_byte_ping_is_refused_from_the_header(self) -> None:
        frame = client(Opcode.PING, b"p" * 126)
        assert protocol_error(frame).close_code == 1002
        assert protocol_error(frame[:2]).close_code == 1002

    def test_fragmented_ping(self) -> None:
        assert protocol_error(client(Opcode.PING, b"p", fin=False)).close_code == 1002

    def test_fragmented_close(self) -> None:
        assert protocol_error(client(Opcode.CLOSE, b"", fin=False)).close_code == 1002

    def test_unsolicited_pong(self) -> None:
        assert receive(client(Opcode.PONG, b"hi")) == [Pong(b"hi")]

    def test_control_frames_between_fragments(self) -> None:
        stream = (
            client(Opcode.BINARY, b"He", fin=False)
            + client(Opcode.PING, b"1")
            + client(Opcode.CONTINUATION, b"l", fin=False)
            + client(Opcode.PONG, b"2")
            + client(Opcode.CONTINUATION, b"lo")
        )
        assert receive(stream) == [Ping(b"1"), Pong(b"2"), Message(b"Hello", False)]

    def test_encode_control_payload_limit(self) -> None:
        assert encode_pong(b"x" * 125)[:2] == bytes.fromhex("8a7d")
        with pytest.raises(ValueError):
            encode_ping(b"x" * 126)
        with pytest.raises(ValueError):
            encode_pong(b"x" * 126)


class TestReservedBitsAndOpcodes:
    """RFC 6455 §5.2: no extension is negotiated, and reserved opcodes are refused."""

    @pytest.mark.parametrize("rsv", [1, 2, 4, 7])
    @pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.PING])
    def test_reserved_bits(self, rsv: int, opcode: int) -> None:
        frame = client(opcode, b"x", rsv=rsv)
        assert frame[0] == 0x80 | rsv << 4 | opcode
        assert protocol_error(frame).close_code == 1002
        assert protocol_error(frame[:2]).close_code == 1002

    @pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
    def test_reserved_opcodes(self, opcode: int) -> None:
        frame = client(opcode, b"x")
        assert protocol_error(frame).close_code == 1002
        assert protocol_error(frame[:2]).close_code == 1002

    def test_encode_frame_field_ranges(self) -> None:
        assert encode_frame(Opcode.TEXT, rsv=4) == bytes.fromhex("c100")
        assert encode_frame(Opcode.TEXT, fin=False) == bytes.fromhex("0100")
        with pytest.raises(ValueError):
            encode_frame(16)
        with pytest.raises(ValueError):
            encode_frame(Opcode.TEXT, rsv=8)


class TestClientMasking:
    """RFC 6455 §5.1: a server must fail on an unmasked client frame."""

    def test_unmasked_frame_is_refused(self) -> None:
        assert protocol_error(encode_frame(Opcode.TEXT, b"Hello")).close_code == 1002

    def test_unmasked_control_frame_is_refused(self) -> None:
        assert protocol_error(encode_ping(b"x")).close_code == 1002

    def test_unmasked_allowed_when_not_required(self) -> None:
        frame = encode_frame(Opcode.TEXT, b"Hello")
        assert receive(frame, require_mask=False) == [Message(b"Hello", True)]


class TestFragmentation:
    """RFC 6455 §5.4."""

    def test_three_fragments(self) -> None:
        stream = (
            client(Opcode.BINARY, b"a", fin=False)
            + client(Opcode.CONTINUATION, b"", fin=False)
            + client(Opcode.CONTINUATION, b"bc")
        )
        assert receive(stream) == [Message(b"abc", False)]

    def test_empty_fragmented_text(self) -> None:
        stream = client(Opcode.TEXT, b"", fin=False) + client(Opcode.CONTINUATION, b"")
        assert receive(stream) == [Message(b"", True)]

    def test_messages_after_a_fragmented_one(self) -> None:
        stream = (
            client(Opcode.TEXT, b"a", fin=False)
            + client(Opcode.CONTINUATION, b"b")
            + client(Opcode.BINARY, b"c", fin=False)
            + client(Opcode.CONTINUATION, b"d")
            + client(Opcode.TEXT, b"e")
        )
        expected = [Message(b"ab", True), Message(b"cd", False), Message(b"e", True)]
        assert receive(stream) == expected

    @pytest.mark.parametrize("fin", [True, False])
    def test_continuation_without_start(self, fin: bool) -> None:
        error = protocol_error(client(Opcode.CONTINUATION, b"x", fin=fin))
        assert type(error) is ProtocolError
        assert error.close_code == 1002

    def test_continuation_after_a_complete_message(self) -> None:
        stream = client(Opcode.TEXT, b"a") + client(Opcode.CONTINUATION, b"b")
        assert protocol_error(stream).close_code == 1002

    @pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
    def test_new_data_frame_mid_fragmentation(self, opcode: int) -> None:
        stream = client(Opcode.TEXT, b"a", fin=False) + client(opcode, b"b")
        assert protocol_error(stream).close_code == 1002

    def test_events_before_an_error_are_kept(self) -> None:
        ws = WebSocketProtocol()
        stream = client(Opcode.TEXT, b"ok") + client(Opcode.CONTINUATION, b"x")
        with pytest.raises(ProtocolError):
            ws.receive_data(stream)
        assert ws.events_before_error == [Message(b"ok", True)]
        assert ws.receive_data(client(Opcode.TEXT, b"later")) == []


class TestSizeLimit:
    """Messages larger than ``max_message_size`` fail with 1009."""

    def test_exactly_at_limit(self) -> None:
        assert receive(client(Opcode.BINARY, b"x" * 10), max_message_size=10) == [
            Message(b"x" * 10, False)
        ]

    def test_one_byte_over(self) -> None:
        error = protocol_error(client(Opcode.BINARY, b"x" * 11), max_message_size=10)
        assert isinstance(error, MessageTooBigError)
        assert error.close_code == 1009

    def test_refused_from_the_header_before_the_payload(self) -> None:
        header = client(Opcode.BINARY, b"x" * 11)[:6]
        assert protocol_error(header, max_message_size=10).close_code == 1009

    def test_default_limit(self) -> None:
        header = bytes.fromhex("82ff0000000000100001") + MASK
        assert protocol_error(header).close_code == 1009
        ok = client(Opcode.BINARY, bytes(DEFAULT_MAX_MESSAGE_SIZE))
        assert receive(ok) == [Message(bytes(DEFAULT_MAX_MESSAGE_SIZE), False)]

    def test_fragmented_exactly_at_limit(self) -> None:
        stream = (
            client(Opcode.TEXT, b"x" * 5, fin=False)
            + client(Opcode.CONTINUATION, b"y" * 5, fin=False)
            + client(Opcode.CONTINUATION, b"")
        )
        assert receive(stream, max_message_size=10) == [Message(b"xxxxxyyyyy", True)]

    def test_fragmented_over_limit(self) -> None:
        ws = WebSocketProtocol(max_message_size=10)
        assert ws.receive_data(client(Opcode.TEXT, b"x" * 4, fin=False)) == []
        assert ws.receive_data(client(Opcode.CONTINUATION, b"x" * 4, fin=False)) == []
        header_only = client(Opcode.CONTINUATION, b"x" * 3)[:6]
        with pytest.raises(MessageTooBigError):
            ws.receive_data(header_only)

    def test_control_frames_do_not_count(self) -> None:
        stream = (
            client(Opcode.BINARY, b"x" * 9, fin=False)
            + client(Opcode.PING, b"p" * 20)
            + client(Opcode.CONTINUATION, b"y")
        )
        expected = [Ping(b"p" * 20), Message(b"x" * 9 + b"y", False)]
        assert receive(stream, max_message_size=10) == expected

    def test_limit_resets_after_a_message(self) -> None:
        stream = (
            client(Opcode.BINARY, b"x" * 6, fin=False)
            + client(Opcode.CONTINUATION, b"x" * 4)
            + client(Opcode.BINARY, b"y" * 10)
        )
        expected = [Message(b"x" * 10, False), Message(b"y" * 10, False)]
        assert receive(stream, max_message_size=10) == expected

    def test_decoder_max_payload(self) -> None:
        decoder = FrameDecoder(max_payload=5)
        decoder.feed(bytes.fromhex("82ff0000010000000000"))
        with pytest.raises(MessageTooBigError):
            decoder.next_frame()


class TestCloseFrames:
    """RFC 6455 §5.5.1 and §7.4."""

    @pytest.mark.parametrize(
        "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
    )
    def test_valid_codes(self, code: int) -> None:
        frame = client(Opcode.CLOSE, struct.pack("!H", code) + "bye \u20ac".encode())
        assert receive(frame) == [Close(code, "bye \u20ac")]
        assert is_valid_close_code(code) is True

    @pytest.mark.parametrize(
        "code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]
    )
    def test_invalid_codes(self, code: int) -> None:
        error = protocol_error(client(Opcode.CLOSE, struct.pack("!H", code)))
        assert type(error) is ProtocolError
        assert error.close_code == 1002
        assert is_valid_close_code(code) is False

    def test_empty_payload(self) -> None:
        assert receive(client(Opcode.CLOSE)) == [Close(None, "")]

    def test_code_without_reason(self) -> None:
        assert receive(client(Opcode.CLOSE, b"\x03\xe8")) == [Close(1000, "")]

    def test_one_byte_payload(self) -> None:
        assert protocol_error(client(Opcode.CLOSE, b"\x03")).close_code == 1002

    def test_invalid_utf8_reason(self) -> None:
        error = protocol_error(client(Opcode.CLOSE, b"\x03\xe8\xc0\xaf"))
        assert isinstance(error, InvalidUTF8Error)
        assert error.close_code == 1007

    def test_data_after_close_is_ignored(self) -> None:
        ws = WebSocketProtocol()
        stream = client(Opcode.CLOSE, b"\x03\xe8") + client(Opcode.TEXT, b"late") + b"\xff\xff"
        assert ws.closed_by_peer is False
        assert ws.receive_data(stream) == [Close(1000, "")]
        assert ws.closed_by_peer is True
        assert ws.receive_data(client(Opcode.TEXT, b"later")) == []
        assert ws.receive_data(b"garbage") == []

    def test_send_close_once(self) -> None:
        ws = WebSocketProtocol()
        assert ws.close_sent is False
        assert ws.send_close(1001, "bye") == bytes.fromhex("880503e9627965")
        assert ws.close_sent is True
        assert ws.send_close() == b""

    def test_messages_still_arrive_after_sending_close(self) -> None:
        ws = WebSocketProtocol()
        ws.send_close()
        assert ws.receive_data(client(Opcode.TEXT, b"x")) == [Message(b"x", True)]


class TestEncodeClose:
    def test_default(self) -> None:
        assert encode_close() == bytes.fromhex("880203e8")

    def test_no_code(self) -> None:
        assert encode_close(None) == bytes.fromhex("8800")
        with pytest.raises(ValueError):
            encode_close(None, "reason")

    def test_with_reason(self) -> None:
        assert encode_close(1001, "bye") == bytes.fromhex("880503e9627965")

    def test_long_ascii_reason_is_truncated_to_125_bytes(self) -> None:
        frame = encode_close(1000, "x" * 200)
        assert frame[:4] == bytes.fromhex("887d03e8")
        assert frame[4:] == b"x" * 123

    def test_truncation_on_a_character_boundary(self) -> None:
        frame = encode_close(1000, "\u00e9" * 100)  # 200 bytes; 123 would split a character
        assert frame[1] == 124
        assert frame[4:].decode("utf-8") == "\u00e9" * 61
        frame = encode_close(1000, "\u20ac" * 50)  # 3-byte characters fit 123 exactly
        assert frame[1] == 125
        assert frame[4:].decode("utf-8") == "\u20ac" * 41

    def test_round_trip(self) -> None:
        frame = bytearray(encode_close(1011, "\u20ac" * 50))
        frame[1] |= 0x80
        masked = bytes(frame[:2]) + MASK + reference_mask(bytes(frame[2:]), MASK)
        assert receive(masked) == [Close(1011, "\u20ac" * 41)]

    @pytest.mark.parametrize("code", [999, 1005, 1006, 1015, 5000])
    def test_codes_that_must_not_be_sent(self, code: int) -> None:
        with pytest.raises(ValueError):
            encode_close(code)


class TestEncodeMessage:
    def test_str_is_text(self) -> None:
        assert encode_message("\u20ac") == bytes.fromhex("8103e282ac")

    def test_str_as_binary(self) -> None:
        assert encode_message("a", is_text=False) == bytes.fromhex("820161")

    def test_bytes_guess_text(self) -> None:
        assert encode_message(b"ab") == bytes.fromhex("81026162")

    def test_bytes_guess_binary(self) -> None:
        assert encode_message(b"\xc0\xaf") == bytes.fromhex("8202c0af")

    def test_explicit_binary(self) -> None:
        assert encode_message(b"ab", is_text=False) == bytes.fromhex("82026162")

    def test_explicit_text_must_be_utf8(self) -> None:
        with pytest.raises(ValueError):
            encode_message(b"\xff", is_text=True)

    def test_large_text(self) -> None:
        frame = encode_message("a" * 70000)
        assert frame[:10] == bytes.fromhex("817f0000000000011170")
        assert frame[10:] == b"a" * 70000


class TestAcceptKey:
    def test_rfc_example(self) -> None:
        # RFC 6455 §1.3 and §4.2.2.
        assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


VALID_ENVIRON = {
    "REQUEST_METHOD": "GET",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "server.example.com",
    "HTTP_UPGRADE": "websocket",
    "HTTP_CONNECTION": "Upgrade",
    "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
    "HTTP_ORIGIN": "http://example.com",
    "HTTP_SEC_WEBSOCKET_PROTOCOL": "chat, superchat",
    "HTTP_SEC_WEBSOCKET_VERSION": "13",
}


def environ(**changes: str | None) -> dict[str, str]:
    result = dict(VALID_ENVIRON)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def handshake_error(env: dict[str, str]) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        check_handshake(env)
    return info.value


class TestHandshake:
    """RFC 6455 §4.2.1, on a WSGI environ."""

    def test_valid(self) -> None:
        assert check_handshake(VALID_ENVIRON) == Handshake(
            key="dGhlIHNhbXBsZSBub25jZQ==",
            protocols=("chat", "superchat"),
            origin="http://example.com",
            host="server.example.com",
        )

    def test_minimal(self) -> None:
        env = environ(HTTP_ORIGIN=None, HTTP_HOST=None, HTTP_SEC_WEBSOCKET_PROTOCOL=None)
        assert check_handshake(env) == Handshake("dGhlIHNhbXBsZSBub25jZQ==", (), None, None)

    def test_tokens_are_case_insensitive_lists(self) -> None:
        env = environ(HTTP_UPGRADE="WebSocket", HTTP_CONNECTION="keep-alive, Upgrade")
        assert check_handshake(env).key == "dGhlIHNhbXBsZSBub25jZQ=="

    def test_later_http_version(self) -> None:
        assert check_handshake(environ(SERVER_PROTOCOL="HTTP/2.0")).protocols == (
            "chat",
            "superchat",
        )

    @pytest.mark.parametrize("method", ["POST", "HEAD", "get"])
    def test_method_must_be_get(self, method: str) -> None:
        error = handshake_error(environ(REQUEST_METHOD=method))
        assert error.status == 405
        assert error.reason == "WebSocket handshake must use GET"
        assert error.headers == [("Allow", "GET")]

    @pytest.mark.parametrize("protocol", ["HTTP/1.0", "HTTP/0.9", "SPDY/3", "", None])
    def test_http_version(self, protocol: str | None) -> None:
        error = handshake_error(environ(SERVER_PROTOCOL=protocol))
        assert type(error) is HandshakeError
        assert error.status == 400

    @pytest.mark.parametrize("upgrade", [None, "", "h2c", "websockets", "http/2, foo"])
    def test_upgrade_must_name_websocket(self, upgrade: str | None) -> None:
        error = handshake_error(environ(HTTP_UPGRADE=upgrade))
        assert error.status == 400
        assert error.reason == "Expected an Upgrade: websocket request"
        assert "upgrade" in error.reason.lower()
        assert "websocket" in error.reason.lower()

    @pytest.mark.parametrize("connection", [None, "", "keep-alive", "upgraded"])
    def test_connection_must_name_upgrade(self, connection: str | None) -> None:
        error = handshake_error(environ(HTTP_CONNECTION=connection))
        assert error.status == 400
        assert error.reason == "Expected an Upgrade: websocket request"

    @pytest.mark.parametrize(
        "key",
        [
            None,
            "",
            "not base64!",
            "dGhlIHNhbXBsZSBub25jZQ",  # padding missing
            "dGhlIHNhbXBsZSBub25j",  # 15 bytes
            "dGhlIHNhbXBsZSBub25jZVg=",  # 17 bytes
            "d\u00e9hlIHNhbXBsZSBub25jZQ==",
        ],
    )
    def test_key(self, key: str | None) -> None:
        error = handshake_error(environ(HTTP_SEC_WEBSOCKET_KEY=key))
        assert type(error) is HandshakeError
        assert error.status == 400
        assert error.reason == "Missing or invalid Sec-WebSocket-Key"

    @pytest.mark.parametrize("version", [None, "", "8", "12", "14", "13, 8"])
    def test_version_must_be_13(self, version: str | None) -> None:
        error = handshake_error(environ(HTTP_SEC_WEBSOCKET_VERSION=version))
        assert isinstance(error, UpgradeRequiredError)
        assert error.status == 426
        assert error.headers == [("Sec-WebSocket-Version", "13")]

    def test_protocol_list_parsing(self) -> None:
        env = environ(HTTP_SEC_WEBSOCKET_PROTOCOL=" chat , ,superchat,")
        assert check_handshake(env).protocols == ("chat", "superchat")

    def test_response_headers(self) -> None:
        handshake = check_handshake(environ(HTTP_SEC_WEBSOCKET_PROTOCOL=None))
        assert handshake_response_headers(handshake, None) == [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]


class TestSubprotocols:
    def test_first_offered_is_selected(self) -> None:
        assert select_subprotocol(("chat", "superchat")) == "chat"
        assert select_subprotocol([]) is None

    def test_exactly_one_protocol_header(self) -> None:
        handshake = check_handshake(VALID_ENVIRON)
        headers = handshake_response_headers(handshake, select_subprotocol(handshake.protocols))
        assert [value for name, value in headers if name == "Sec-WebSocket-Protocol"] == ["chat"]
        assert len(headers) == 4

    def test_not_offered_is_refused(self) -> None:
        with pytest.raises(ValueError):
            handshake_response_headers(check_handshake(VALID_ENVIRON), "other")


class TestSansIO:
    FORBIDDEN = frozenset({"socket", "select", "uwsgi", "gevent", "threading", "django"})

    def test_imports_no_io_or_framework_module(self) -> None:
        tree = ast.parse(Path(websocket.__file__).read_text(encoding="utf-8"))
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
        assert {"struct", "codecs", "wsaccel"} <= imported  # the walk does see imports
        assert imported.isdisjoint(self.FORBIDDEN), imported & self.FORBIDDEN
