"""One Redis pub/sub connection per worker process, shared by all of its WebSockets.

The hub reference-counts channel subscriptions: a channel is subscribed in Redis when its first
local listener arrives and unsubscribed when its last one leaves.  A reader task receives every
message once, encodes its WebSocket frame once, and hands that same frame to each local listener
of the channel.  When the Redis connection drops, the reader reconnects with exponential backoff
and full jitter and subscribes again to every channel that still has listeners.

Under Redis Sentinel the hub connects to the master that the sentinels name, and checks every
:data:`~ws4redis.connection.SENTINEL_CHECK_INTERVAL` seconds that it still is: after a failover
it moves to the new master.  Under Redis Cluster, :class:`ShardedHub` keeps one such engine per
master that owns the slot of a channel with local listeners, speaking sharded pub/sub
(``SSUBSCRIBE``), and moves channels when their slots move.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import redis
from redis.crc import key_slot as _crc_key_slot

try:
    import hiredis
except ImportError:  # pragma: no cover - redis[hiredis] is a requirement
    hiredis = None

from ws4redis import metrics
from ws4redis.exceptions import RedisUnavailableError
from ws4redis.runtime import Runtime
from ws4redis.websocket import encode_message

if TYPE_CHECKING:
    from ws4redis.connection import ClusterNodes

logger = logging.getLogger("ws4redis")

#: Seconds before the first reconnect attempt; doubled after each failure up to the cap.
RECONNECT_BASE_DELAY = 0.1
#: Upper bound in seconds of the delay between reconnect attempts.
RECONNECT_MAX_DELAY = 1.0
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
#: Bytes read from the pub/sub socket at once; one read usually holds many messages.
READ_SIZE = 1 << 16
#: A cluster hub refreshes its slot table at most this often (seconds), however many
#: ``MOVED`` replies, lost connections or slot moves ask for it.
REFRESH_MIN_INTERVAL = 0.25
#: After a shard dropped channels, the slot table is read again this many times (every
#: :data:`REFRESH_MIN_INTERVAL`) while it still names the same master: the node asked may not
#: know of the failover yet.
STALE_REFRESHES = 20


@dataclass(frozen=True)
class PubSubCommands:
    """The commands and reply kinds of one flavour of Redis pub/sub."""

    subscribe: str
    unsubscribe: str
    message: bytes
    subscribed: bytes
    unsubscribed: bytes
    #: Send one command per channel (sharded pub/sub refuses channels of different slots).
    one_per_channel: bool = False


#: ``SUBSCRIBE``: a single server or a Sentinel master.
PLAIN = PubSubCommands("SUBSCRIBE", "UNSUBSCRIBE", b"message", b"subscribe", b"unsubscribe")
#: ``SSUBSCRIBE``: a Redis Cluster shard (Redis ≥ 7).
SHARDED = PubSubCommands(
    "SSUBSCRIBE", "SUNSUBSCRIBE", b"smessage", b"ssubscribe", b"sunsubscribe", True
)


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
        commands: PubSubCommands = PLAIN,
        health_check: Callable[[redis.Connection], bool] | None = None,
        health_interval: float = 1.0,
        on_trouble: Callable[[PubSubHub, list[str] | None], None] | None = None,
    ) -> None:
        """``health_check(connection)`` is called every ``health_interval`` seconds; ``False``
        makes the hub reconnect.  ``on_trouble(hub, channels)`` hears of channels Redis dropped
        (``channels``) or of a lost connection or a ``MOVED`` reply (``None``)."""
        self._connection_factory = connection_factory
        self._runtime = runtime
        self._subscribe_timeout = subscribe_timeout
        self._commands = commands
        self._message_kind = commands.message
        self._health_check = health_check
        self._health_interval = health_interval
        self._on_trouble = on_trouble
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
                self._send(self._commands.subscribe, new)
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
                self._send(self._commands.unsubscribe, gone)
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

    @property
    def connected(self) -> bool:
        """Whether the hub holds a Redis connection now."""
        return self._connection is not None

    def take(self, channel: str) -> set[Listener]:
        """Remove ``channel`` and its listeners from this hub (to move them to another one)."""
        listeners = self._listeners.pop(channel, set())
        if self._unacknowledged.pop(channel, None):
            self._notify_acknowledged()
        if self._connection is not None:
            try:
                self._send(self._commands.unsubscribe, [channel])
            except RedisUnavailableError:
                pass
        return listeners

    def adopt(self, channel: str, listeners: set[Listener], *, again: bool = False) -> None:
        """Add ``listeners`` of ``channel`` without waiting; subscribe when it is new here.

        ``again``: subscribe even though the channel is known (Redis dropped it).  When not
        connected, the reader (started if needed) subscribes on (re)connecting.
        """
        new = not self._listeners.get(channel)
        self._listeners.setdefault(channel, set()).update(listeners)
        if again:
            self._unacknowledged.pop(channel, None)
        if self._reader is None:
            self._reader = self._runtime.spawn(self._read_forever)
        elif (new or again) and self._connection is not None:
            try:
                self._send(self._commands.subscribe, [channel])
            except RedisUnavailableError:
                pass  # the reader reconnects and subscribes to every channel

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
            if self._health_check is not None:
                self._runtime.spawn(self._watch_health)

    def _connect(self) -> redis.Connection:
        connection = None
        try:
            connection = self._connection_factory()  # asks Sentinel, under Sentinel
            connection.connect()
        except REDIS_ERRORS as exc:
            logger.warning("Redis pub/sub connection failed: %s", exc)
            if connection is not None:
                connection.disconnect()
            raise RedisUnavailableError() from exc
        return connection

    def _watch_health(self) -> None:
        """Reconnect when ``health_check`` finds the connection no longer goes where it should
        (a Sentinel master demoted while it keeps its clients)."""
        while not self._closed:
            self._runtime.sleep(self._health_interval)
            connection = self._connection
            if connection is not None and not self._health_check(connection):  # type: ignore[misc]
                logger.warning("Redis pub/sub server is no longer the master; reconnecting")
                connection.disconnect()  # the reader sees it and reconnects

    def _send(self, command: str, channels: list[str]) -> None:
        connection = self._connection
        if connection is None:
            raise RedisUnavailableError()
        for channel in channels:
            if command == self._commands.subscribe:
                self._unacknowledged[channel] = self._unacknowledged.get(channel, 0) + 1
        try:
            with self._send_lock:
                if self._commands.one_per_channel:
                    packed = connection.pack_commands([(command, c) for c in channels])
                    connection.send_packed_command(packed, check_health=False)
                else:
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
            self._send(self._commands.subscribe, channels)
        metrics.record_reconnect()
        logger.info("Redis pub/sub connection restored; %d channels resubscribed", len(channels))
        return connection

    def _drop_connection(self, exc: BaseException | None) -> None:
        if self._connection is not None:
            logger.warning("Redis pub/sub connection lost: %s", exc)
            self._connection.disconnect()
        self._connection = None
        self._notify_acknowledged()
        if self._on_trouble is not None:
            self._on_trouble(self, None)

    def _dispatch_all(self, responses: list[Any]) -> None:
        """Act on replies in order; a run of messages on one channel is delivered at once.

        Under load, one read brings many messages: a listener then gets a run of consecutive
        messages of a channel in one call (``deliver_many``), which the WebSocket loop writes
        with one ``send``.  Runs never reorder messages of different channels.
        """
        kind = self._message_kind
        index, count = 0, len(responses)
        while index < count:
            response = responses[index]
            if isinstance(response, Exception):
                self._error_reply(response)
                index += 1
                continue
            end = index + 1
            if response[0] == kind:
                channel = response[1]
                while end < count:
                    following = responses[end]
                    if (
                        isinstance(following, Exception)
                        or following[0] != kind
                        or following[1] != channel
                    ):
                        break
                    end += 1
            if end - index > 1:
                self._deliver_run(
                    channel.decode("utf-8", "surrogateescape"),
                    [reply[2] for reply in responses[index:end]],
                )
            else:
                self._dispatch(response)
            index = end

    def _error_reply(self, error: Exception) -> None:
        """An error reply: a ``MOVED`` (a cluster slot moved) asks for a refresh, others raise."""
        text = str(error)
        if self._on_trouble is None or not text.startswith("MOVED "):
            raise error
        slot = int(text.split()[1])
        moved = [
            c for c in self._listeners if key_slot(c.encode("utf-8", "surrogateescape")) == slot
        ]
        self._on_trouble(self, moved or None)

    def _dispatch(self, response: Any) -> None:
        kind = response[0]
        commands = self._commands
        if kind == commands.message:
            self._deliver(response[1].decode("utf-8", "surrogateescape"), response[2])
        elif kind == commands.unsubscribed and self._on_trouble is not None:
            channel = response[1].decode("utf-8", "surrogateescape")
            if self._listeners.get(channel):
                self._on_trouble(self, [channel])  # Redis dropped it: its slot moved away
        elif kind == commands.subscribed:
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
        started = time.perf_counter()
        frame = encode_message(payload)
        for listener in list(listeners):
            try:
                listener.deliver(channel, payload, frame)
            except Exception:
                logger.exception("Delivering a message on %s failed", channel)
        metrics.observe_fanout(time.perf_counter() - started)

    def _deliver_run(self, channel: str, payloads: list[bytes]) -> None:
        listeners = self._listeners.get(channel)
        if not listeners:
            return
        started = time.perf_counter()
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
        metrics.observe_fanout(time.perf_counter() - started, len(payloads))

    @staticmethod
    def _deliver_one(listener: Listener, channel: str, payload: bytes, frame: bytes) -> None:
        try:
            listener.deliver(channel, payload, frame)
        except Exception:
            logger.exception("Delivering a message on %s failed", channel)


class ShardedHub:
    """The hub of a Redis Cluster: one sharded pub/sub engine per master with listeners.

    Each channel lives on the :class:`PubSubHub` (speaking ``SSUBSCRIBE``) of the master that
    owns its slot, so a worker holds at most one pub/sub connection per shard.  When a master
    drops channels (``sunsubscribe`` after its slots moved or it was demoted), answers
    ``MOVED``, or its connection is lost, a refresher task reads the slot table again
    (``CLUSTER SLOTS``, at most every :data:`REFRESH_MIN_INTERVAL` seconds while trouble lasts)
    and moves the channels to the engines of their owners, which subscribe them.
    """

    def __init__(self, nodes: ClusterNodes, runtime: Runtime, *, subscribe_timeout: float = 5.0):
        self._nodes = nodes
        self._runtime = runtime
        self._subscribe_timeout = subscribe_timeout
        self._owners: list[tuple[str, int]] = []  # the master of each slot
        self._engines: dict[tuple[str, int], PubSubHub] = {}
        self._homes: dict[str, tuple[str, int]] = {}  # channel -> the engine holding its listeners
        self._lost: set[str] = set()  # channels Redis dropped, to subscribe again
        self._trouble = runtime.event()
        self._topology_lock = runtime.lock()
        self._refresher: Any = None
        self._closed = False

    # -- the hub API ----------------------------------------------------------------------

    def subscribe(self, listener: Listener, channels: Iterable[str]) -> None:
        """Add ``listener`` to ``channels`` on their shards; wait until each confirms.

        Raises :class:`~ws4redis.exceptions.RedisUnavailableError` when a shard cannot be
        reached.
        """
        channels = list(dict.fromkeys(channels))
        if not channels:
            return
        self._ensure_topology()
        done: list[str] = []
        try:
            for address, group in self._by_home(channels).items():
                self._homes.update(dict.fromkeys(group, address))
                self._engine(address).subscribe(listener, group)
                done += group
        except RedisUnavailableError:
            self.unsubscribe(listener, done)
            for channel in channels:
                if not self.listener_count(channel):
                    self._homes.pop(channel, None)
            self._report_trouble(None, None)
            raise

    def unsubscribe(self, listener: Listener, channels: Iterable[str]) -> None:
        """Remove ``listener`` from ``channels``; shards unsubscribe those nobody listens to."""
        for address, group in self._by_home(list(channels), known_only=True).items():
            engine = self._engines[address]
            engine.unsubscribe(listener, group)
            for channel in group:
                if not engine.listener_count(channel):
                    self._homes.pop(channel, None)

    @property
    def channels(self) -> list[str]:
        """The channels that have at least one local listener."""
        return list(self._homes)

    def listener_count(self, channel: str) -> int:
        """How many local listeners ``channel`` has."""
        address = self._homes.get(channel)
        return self._engines[address].listener_count(channel) if address else 0

    @property
    def shards(self) -> dict[tuple[str, int], list[str]]:
        """The masters this hub holds a pub/sub engine for, and their channels."""
        return {address: engine.channels for address, engine in self._engines.items()}

    def close(self) -> None:
        """Stop every engine and the refresher."""
        self._closed = True
        self._trouble.set()
        for engine in self._engines.values():
            engine.close()

    # -- topology ---------------------------------------------------------------------------

    def _by_home(
        self, channels: list[str], known_only: bool = False
    ) -> dict[tuple[str, int], list[str]]:
        groups: dict[tuple[str, int], list[str]] = {}
        for channel in channels:
            address = self._homes.get(channel)
            if address is None:
                if known_only:
                    continue
                address = self._owners[key_slot(channel.encode("utf-8", "surrogateescape"))]
            groups.setdefault(address, []).append(channel)
        return groups

    def _engine(self, address: tuple[str, int]) -> PubSubHub:
        engine = self._engines.get(address)
        if engine is None:
            engine = self._engines[address] = PubSubHub(
                lambda: self._nodes.connect(address),
                self._runtime,
                subscribe_timeout=self._subscribe_timeout,
                commands=SHARDED,
                on_trouble=self._report_trouble,
            )
        return engine

    def _ensure_topology(self) -> None:
        if self._owners:
            return
        with self._topology_lock:
            if not self._owners:
                self._load_slot_table()
                self._refresher = self._runtime.spawn(self._refresh_forever)

    def _load_slot_table(self) -> None:
        try:
            table = self._nodes.slot_table()
        except (redis.exceptions.RedisError, OSError) as exc:
            logger.warning("Redis Cluster slot table unavailable: %s", exc)
            raise RedisUnavailableError() from exc
        owners: list[tuple[str, int] | None] = [None] * SLOTS
        for first, last, address in table:
            owners[first : last + 1] = [address] * (last - first + 1)
        fallback = table[0][2] if table else ("127.0.0.1", 6379)
        self._owners = [owner or fallback for owner in owners]  # uncovered slots: MOVED later

    def _report_trouble(self, engine: PubSubHub | None, channels: list[str] | None) -> None:
        if channels:
            self._lost.update(channels)
        self._trouble.set()

    def _refresh_forever(self) -> None:
        """The one place where channels move between shards."""
        stale_rounds = 0
        while not self._closed:
            self._trouble.wait()
            if self._closed:
                return
            self._trouble.clear()
            try:
                with self._topology_lock:
                    self._load_slot_table()
                stale = self._rehome()
            except RedisUnavailableError:
                stale = True  # no node answered: try again after the pause
            except Exception:
                logger.exception("Refreshing the Redis Cluster topology failed")
                stale = False
            stale_rounds = stale_rounds + 1 if stale else 0
            self._runtime.sleep(REFRESH_MIN_INTERVAL)
            away = any(not e.connected and e.channels for e in self._engines.values())
            if away or 0 < stale_rounds < STALE_REFRESHES:
                self._trouble.set()  # the view may lag the failover: look again

    def _rehome(self) -> bool:
        """Move channels to the engines of their slots' owners; ``True`` if the view looked
        stale (a channel Redis dropped still belongs, by this view, to the same master)."""
        lost, self._lost = self._lost, set()
        stale = False
        for address, engine in list(self._engines.items()):
            for channel in engine.channels:
                owner = self._owners[key_slot(channel.encode("utf-8", "surrogateescape"))]
                if owner != address:
                    self._homes[channel] = owner
                    self._engine(owner).adopt(channel, engine.take(channel))
                elif channel in lost:
                    stale = True
                    self._lost.add(channel)  # until a MOVED or the new owner settles it
                    engine.adopt(channel, set(), again=True)
        masters = set(self._owners)
        for address, engine in list(self._engines.items()):
            if address not in masters and not engine.channels:
                engine.close()  # a demoted or removed master: keep no connection to it
                del self._engines[address]
        return stale


#: The number of hash slots of a Redis Cluster.
SLOTS = 16384


def key_slot(channel: bytes) -> int:
    """The cluster hash slot of ``channel`` (hash tags ``{…}`` respected)."""
    return int(_crc_key_slot(channel))


Hub = PubSubHub | ShardedHub
_hubs: dict[tuple[int, str], Hub] = {}


def get_hub(runtime: Runtime) -> PubSubHub | ShardedHub:
    """The hub of this process for ``runtime`` (a new one after a fork).

    Its kind follows ``WS4REDIS_CONNECTION``: a :class:`ShardedHub` for a Redis Cluster, a
    :class:`PubSubHub` that follows the master for Sentinel, a plain one otherwise.
    """
    key = (os.getpid(), runtime.name)
    hub = _hubs.get(key)
    if hub is None:
        hub = _hubs[key] = _make_hub(runtime)
    return hub


def _make_hub(runtime: Runtime) -> PubSubHub | ShardedHub:
    from ws4redis.connection import (
        SENTINEL_CHECK_INTERVAL,
        ClusterNodes,
        SentinelMaster,
        hub_connection_source,
    )

    source = hub_connection_source()
    if isinstance(source, ClusterNodes):
        return ShardedHub(source, runtime)
    if isinstance(source, SentinelMaster):
        return PubSubHub(
            source.connect,
            runtime,
            health_check=source.is_current,
            health_interval=SENTINEL_CHECK_INTERVAL,
        )
    return PubSubHub(source, runtime)
