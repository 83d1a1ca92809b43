"""Throughput of the sans-I/O RFC 6455 codec in ``ws4redis.websocket``, against wsproto.

One run measures, for small (32 B) and large (64 KiB) payloads by default:

* **encode**: one final, unmasked server frame from a payload, binary (bytes) and text (str):
  ``encode_message`` against ``WSConnection.send(BytesMessage / TextMessage)``;
* **decode**: one masked client frame fed to a server's protocol object, as it arrives from the
  socket, and its events consumed: ``WebSocketProtocol.receive_data`` against
  ``WSConnection(ConnectionType.SERVER).receive_data`` + ``events()`` after a real opening
  handshake, binary and text (text includes the UTF-8 check);
* **mask**: XOR of the payload with a 4-byte key: ``mask_payload`` against
  ``wsproto.frame_protocol.XorMaskerSimple(key).process``, which wsproto's frame decoder
  builds for every frame it receives;
* **UTF-8 check**: validation of a whole text payload: ``is_valid_utf8`` against
  ``codecs.getincrementaldecoder("utf-8")().decode(payload, True)``, what wsproto's
  ``MessageDecoder`` runs on every text frame;

each for three implementations: ours with wsaccel (the default when it is installed), ours
forced onto its pure-Python paths (the benchmark points the module's masking function at
``_mask_python`` and checks that decoding then goes through it), and wsproto on the same
bytes. Text payloads are chat-like JSON with accented letters, CJK and an emoji, never pure
ASCII. Every implementation's output is checked against the others' before anything is timed.

A second table times, in the same turns, the C primitives alone that the mask and UTF-8 rows
rest on (wsaccel's masker; CPython's UTF-8 decoder, which both sides call; wsaccel's UTF-8
validator, the one C alternative at hand), to show how close to them each side gets.

Timing: ``time.perf_counter`` around a loop of N operations with the garbage collector off
(as ``timeit`` does). Each cell is warmed up and calibrated first (N is chosen so one run
takes ``--seconds / --repeat``, 6 ms by default), then run ``--repeat`` times, the runners of
a row taking turns so that a busy moment of the machine does not hit only one of them; the
best run of each is reported. Many short runs make the best one likely to have had a CPU to
itself even on a shared, loaded machine; with 20 runs of 30 ms under a load average of 10 on
2 CPUs, runners sharing the very same code differed by up to 3×. MB/s counts payload bytes
(10**6 bytes per MB); frames/s counts operations (one frame per operation; for mask and
UTF-8, one payload). The last column is the throughput of ours with wsaccel divided by
wsproto's.

Usage::

    .venv/bin/python benchmarks/codec_benchmark.py [--seconds 0.6] [--repeat 100]
        [--sizes 32 65536] [--only OPERATION ...] [--require-faster]

Prints the versions and Markdown tables. ``--require-faster`` exits with status 1 if ours
with wsaccel is not faster than wsproto on some row; otherwise the script asserts nothing.
"""

from __future__ import annotations

import argparse
import codecs
import gc
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from importlib import metadata
from itertools import repeat
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import wsproto  # noqa: E402
from wsaccel.utf8validator import Utf8Validator as WsaccelUtf8Validator  # noqa: E402
from wsaccel.xormask import XorMaskerSimple as WsaccelMasker  # noqa: E402
from wsproto import ConnectionType, WSConnection  # noqa: E402
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage  # noqa: E402
from wsproto.frame_protocol import XorMaskerSimple as WsprotoMasker  # noqa: E402

import ws4redis  # noqa: E402
from ws4redis import websocket  # noqa: E402

Runner = Callable[[int], None]
"""Runs one operation ``n`` times."""

OURS, PURE, WSPROTO = "ours + wsaccel", "ours, pure Python", "wsproto"
IMPLEMENTATIONS = (OURS, PURE, WSPROTO)
# C primitives timed alone, for the second table
WSACCEL_MASKER = "wsaccel `XorMaskerSimple(key).process`"
CPYTHON_UTF8 = 'CPython `bytes.decode("utf-8")`'
WSACCEL_UTF8 = "wsaccel `Utf8Validator().validate`"

MASK = bytes.fromhex("37fa213d")
TEXT_SAMPLE = (
    '{"user": "zoë", "room": "café", "text": "Grüße aus Köln! 你好, 世界 😀", "id": 12345}\n'
)
HANDSHAKE = (
    b"GET /ws/bench HTTP/1.1\r\n"
    b"Host: localhost\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


# --------------------------------------------------------------------------------------------
# Data


def binary_payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def text_payload(size: int) -> str:
    """Chat-like text of exactly ``size`` UTF-8 bytes, with multibyte characters in it."""
    data = (TEXT_SAMPLE * (size // len(TEXT_SAMPLE.encode()) + 1)).encode()[:size]
    text = data.decode("utf-8", "ignore")  # drop a character cut in half at the end
    text += " " * (size - len(text.encode()))
    assert len(text.encode()) == size and not text.isascii()
    return text


def client_frame(payload: bytes, is_text: bool) -> bytes:
    opcode = websocket.Opcode.TEXT if is_text else websocket.Opcode.BINARY
    return websocket.encode_frame(opcode, payload, mask=MASK)


def wsproto_server() -> WSConnection:
    """A wsproto server connection after a real opening handshake."""
    connection = WSConnection(ConnectionType.SERVER)
    connection.receive_data(HANDSHAKE)
    request = next(connection.events())
    assert isinstance(request, Request), request
    connection.send(AcceptConnection())
    return connection


# --------------------------------------------------------------------------------------------
# The pure-Python switch


@contextmanager
def pure_python() -> Iterator[None]:
    """Point the codec at its pure-Python masking, as if wsaccel were not installed.

    The codec looks ``_mask`` up as a module global on every call, so this reaches every path
    (``mask_payload``, the frame decoder, ``encode_frame``); encoding and the UTF-8 check
    never use wsaccel.
    """
    saved = websocket._mask
    setattr(websocket, "_mask", websocket._mask_python)  # noqa: B010 - Final for mypy only
    try:
        yield
    finally:
        setattr(websocket, "_mask", saved)  # noqa: B010


def check_pure_python_switch() -> None:
    """Prove that under :func:`pure_python` decoding and masking go through ``_mask_python``."""
    calls = []
    original = websocket._mask_python

    def counting(payload: Any, mask: Any) -> bytes:
        calls.append(len(payload))
        return original(payload, mask)

    payloads = [binary_payload(100), binary_payload(65536)]
    frames = [client_frame(payload, False) for payload in payloads]
    with pure_python():
        setattr(websocket, "_mask", counting)  # noqa: B010
        for payload, frame in zip(payloads, frames, strict=True):
            events = websocket.WebSocketProtocol().receive_data(frame)
            assert events == [websocket.Message(payload, False)], events
            assert websocket.mask_payload(payload, MASK) == original(payload, MASK)
    assert calls == [100, 100, 65536, 65536], f"the pure-Python switch missed a path: {calls}"
    assert websocket._mask is websocket._mask_wsaccel, "wsaccel must be the default"


# --------------------------------------------------------------------------------------------
# Operations: each builder checks the implementations agree, then returns their runners


def ours_encode(payload: bytes | str) -> Runner:
    encode = websocket.encode_message
    if isinstance(payload, str):

        def run(n: int) -> None:
            for _ in repeat(None, n):
                encode(payload)

    else:

        def run(n: int) -> None:
            for _ in repeat(None, n):
                encode(payload, False)

    return run


def wsproto_encode(payload: bytes | str) -> Runner:
    send = wsproto_server().send
    if isinstance(payload, str):

        def run(n: int) -> None:
            for _ in repeat(None, n):
                send(TextMessage(data=payload))

    else:

        def run(n: int) -> None:
            for _ in repeat(None, n):
                send(BytesMessage(data=payload))

    return run


def encode_runners(size: int, is_text: bool) -> dict[str, Runner]:
    payload: bytes | str = text_payload(size) if is_text else binary_payload(size)
    data = payload.encode() if isinstance(payload, str) else payload
    expected = websocket.encode_frame(1 if is_text else 2, data)
    ours = websocket.encode_message(payload) if is_text else websocket.encode_message(data, False)
    event = TextMessage(data=payload) if isinstance(payload, str) else BytesMessage(data=payload)
    assert ours == bytes(wsproto_server().send(event)) == expected
    run = ours_encode(payload)
    return {OURS: run, PURE: run, WSPROTO: wsproto_encode(payload)}


def ours_decode(frame: bytes) -> Runner:
    receive = websocket.WebSocketProtocol().receive_data

    def run(n: int) -> None:
        for _ in repeat(None, n):
            for _event in receive(frame):
                pass

    return run


def wsproto_decode(frame: bytes) -> Runner:
    connection = wsproto_server()
    receive, events = connection.receive_data, connection.events

    def run(n: int) -> None:
        for _ in repeat(None, n):
            receive(frame)
            for _event in events():
                pass

    return run


def decode_runners(size: int, is_text: bool) -> dict[str, Runner]:
    payload = text_payload(size).encode() if is_text else binary_payload(size)
    frame = client_frame(payload, is_text)
    for context in (nullcontext(), pure_python()):
        with context:
            ours = websocket.WebSocketProtocol()
            for _ in range(3):
                assert ours.receive_data(frame) == [websocket.Message(payload, is_text)]
    connection = wsproto_server()
    for _ in range(3):
        connection.receive_data(frame)
        (event,) = connection.events()
        expected = payload.decode() if is_text else payload
        kind = TextMessage if is_text else BytesMessage
        assert type(event) is kind and event.data == expected and event.message_finished
    return {OURS: ours_decode(frame), PURE: ours_decode(frame), WSPROTO: wsproto_decode(frame)}


def mask_runners(size: int) -> dict[str, Runner]:
    payload = binary_payload(size)
    mask_payload = websocket.mask_payload
    expected = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    assert mask_payload(payload, MASK) == expected
    with pure_python():
        assert mask_payload(payload, MASK) == expected
    assert WsprotoMasker(MASK).process(bytearray(payload)) == expected
    assert WsaccelMasker(MASK).process(payload) == expected

    def ours(n: int) -> None:
        for _ in repeat(None, n):
            mask_payload(payload, MASK)

    def theirs(n: int) -> None:
        for _ in repeat(None, n):
            WsprotoMasker(MASK).process(payload)

    def wsaccel_masker(n: int) -> None:
        for _ in repeat(None, n):
            WsaccelMasker(MASK).process(payload)

    return {OURS: ours, PURE: ours, WSPROTO: theirs, WSACCEL_MASKER: wsaccel_masker}


def utf8_runners(size: int) -> dict[str, Runner]:
    payload = text_payload(size).encode()
    is_valid_utf8 = websocket.is_valid_utf8
    getincrementaldecoder = codecs.getincrementaldecoder
    assert is_valid_utf8(payload) and not is_valid_utf8(payload[:-3] + b"\xed\xa0\x80")
    assert getincrementaldecoder("utf-8")().decode(payload, True) == payload.decode()
    assert WsaccelUtf8Validator().validate(payload)[:2] == (True, True)

    def ours(n: int) -> None:
        for _ in repeat(None, n):
            is_valid_utf8(payload)

    def theirs(n: int) -> None:
        for _ in repeat(None, n):
            getincrementaldecoder("utf-8")().decode(payload, True)

    def cpython_decoder(n: int) -> None:
        for _ in repeat(None, n):
            payload.decode("utf-8")

    def wsaccel_validator(n: int) -> None:
        for _ in repeat(None, n):
            WsaccelUtf8Validator().validate(payload)

    return {
        OURS: ours,
        PURE: ours,
        WSPROTO: theirs,
        CPYTHON_UTF8: cpython_decoder,
        WSACCEL_UTF8: wsaccel_validator,
    }


@dataclass(frozen=True)
class Operation:
    name: str
    runners: Callable[[int], dict[str, Runner]]  # the implementations, then any C primitive


OPERATIONS = (
    Operation("encode binary", lambda size: encode_runners(size, False)),
    Operation("encode text", lambda size: encode_runners(size, True)),
    Operation("decode binary", lambda size: decode_runners(size, False)),
    Operation("decode text", lambda size: decode_runners(size, True)),
    Operation("mask", mask_runners),
    Operation("UTF-8 check", utf8_runners),
)


# --------------------------------------------------------------------------------------------
# Timing


def timed(run: Runner, n: int) -> float:
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        run(n)
        return time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()


def calibrate(run: Runner, seconds: float) -> int:
    """Warm ``run`` up and return how many operations take about ``seconds``."""
    n = 1
    while (elapsed := timed(run, n)) < 0.02:  # the warm-up: at least 20 ms of running
        n *= 2
    return max(1, round(n * seconds / elapsed))


@dataclass(frozen=True)
class Row:
    operation: Operation
    size: int
    seconds: dict[str, float] = field(default_factory=dict)  # per operation, by runner name

    def per_second(self, name: str) -> float:
        return 1.0 / self.seconds[name]

    def megabytes(self, name: str) -> float:
        return self.size * self.per_second(name) / 1e6

    def ratio(self) -> float:
        return self.seconds[WSPROTO] / self.seconds[OURS]


def measure(operation: Operation, size: int, seconds: float, repeats: int) -> Row:
    """Time every runner of a row, taking turns, and keep the best run of each."""
    runners = operation.runners(size)

    def context(name: str) -> AbstractContextManager[None]:
        return pure_python() if name == PURE else nullcontext()

    counts: dict[str, int] = {}
    for name, run in runners.items():
        with context(name):
            counts[name] = calibrate(run, seconds / repeats)
    row = Row(operation, size, dict.fromkeys(runners, float("inf")))
    for _ in range(repeats):
        for name, run in runners.items():
            with context(name):
                elapsed = timed(run, counts[name]) / counts[name]
            row.seconds[name] = min(row.seconds[name], elapsed)
    return row


# --------------------------------------------------------------------------------------------
# Report


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def markdown(header: list[str], lines: list[list[str]]) -> str:
    rows = [header, ["---"] * len(header), *lines]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


def throughput_table(rows: list[Row]) -> str:
    header = ["operation", "size"]
    for name in IMPLEMENTATIONS:
        header += [f"{name} MB/s", "frames/s"]
    header.append("ours + wsaccel / wsproto")
    lines = []
    for row in rows:
        cells = [row.operation.name, size_label(row.size)]
        for name in IMPLEMENTATIONS:
            cells += [f"{row.megabytes(name):,.1f}", f"{row.per_second(name):,.0f}"]
        cells.append(f"{row.ratio():.2f}×")
        lines.append(cells)
    return markdown(header, lines)


def primitives(row: Row) -> list[str]:
    return [name for name in row.seconds if name not in IMPLEMENTATIONS]


def primitive_table(rows: list[Row]) -> str:
    header = ["operation", "size", "C primitive", "MB/s", "ours + wsaccel", "wsproto"]
    lines = [
        [
            row.operation.name,
            size_label(row.size),
            name,
            f"{row.megabytes(name):,.1f}",
            f"{row.seconds[name] / row.seconds[OURS]:.0%}",
            f"{row.seconds[name] / row.seconds[WSPROTO]:.0%}",
        ]
        for row in rows
        for name in primitives(row)
    ]
    return markdown(header, lines)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def versions() -> str:
    return "\n".join(
        [
            f"Python {platform.python_version()} ({platform.python_implementation()}, "
            f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load()})",
            f"ws4redis {ws4redis.__version__} ({websocket.__file__})",
            f"wsaccel {metadata.version('wsaccel')} (HAS_WSACCEL={websocket.HAS_WSACCEL})",
            f"wsproto {wsproto.__version__}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.6, help="timed seconds per cell")
    parser.add_argument("--repeat", type=int, default=100, help="timed runs per cell")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 65536])
    parser.add_argument(
        "--only", nargs="+", metavar="OPERATION", help="operations whose name starts so"
    )
    parser.add_argument(
        "--require-faster",
        action="store_true",
        help="exit 1 unless ours with wsaccel beats wsproto on every row",
    )
    args = parser.parse_args(argv)
    if not websocket.HAS_WSACCEL:
        parser.error("wsaccel is not importable: install the 'accel' extra")
    check_pure_python_switch()
    operations = [
        op for op in OPERATIONS if not args.only or any(op.name.startswith(o) for o in args.only)
    ]
    print(versions())
    print(
        f"best of {args.repeat} runs, {args.seconds:g} s per cell in all; "
        "MB/s = 10**6 payload bytes per second\n",
        flush=True,
    )
    rows = [
        measure(operation, size, args.seconds, args.repeat)
        for operation in operations
        for size in args.sizes
    ]
    print(throughput_table(rows))
    if any(primitives(row) for row in rows):
        print(
            "\nC primitives alone, timed in the same turns; the last two columns give the speed "
            "of ours with wsaccel and of wsproto as a share of the primitive's:\n"
        )
        print(primitive_table(rows))
    print(f"\nload average at the end: {load()}")
    slower = [f"{row.operation.name} {size_label(row.size)}" for row in rows if row.ratio() <= 1]
    if slower:
        print("ours + wsaccel is NOT faster than wsproto on: " + ", ".join(slower))
    return 1 if slower and args.require_faster else 0


if __name__ == "__main__":
    sys.exit(main())
