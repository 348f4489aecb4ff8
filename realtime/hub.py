"""The WebSocket hub: Redis sharded subscriptions (one connection per shard), dispatched to local sockets.

A channel is subscribed while at least one local socket of its member is open, or a local socket
taps it (``Tap``: a socket watching an object follows its owner's channel through a filter of its
own; a socket taps nothing unless it watches). The hub knows frames and subscriptions, not game
rules. If the subscription connection drops, messages may
have been missed, so every local socket is closed with ``RESUME``: clients reconnect, resume
from the last id they saw, and lose nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis

from engine.cluster import Shards
from realtime import metrics
from realtime.frames import CloseCode, Encoding, Frame, Resume, frames_from_message
from realtime.subscriber import Subscriber

log = logging.getLogger("rekindle.hub")

REPLAYED = -1  # the stamp of a queued frame that came from the replay


class LiveConnection:
    """One socket's side of the hub: a bounded queue of encoded frames and its resume state.

    Frames are sent by a drain task that exists only while there is something to send. A
    writer parked on an event per socket would allocate a coroutine and a future per frame that
    live until the socket's next frame: at 10,000 sockets, enough young garbage to make the
    cyclic collector pause the process for tens of milliseconds at a time.
    """

    def __init__(self, member: str, channel: bytes, encoding: Encoding, max_queue: int, sender: "Sender") -> None:
        self.member = member
        self.channel = channel
        self.encoding = encoding
        self.resume = Resume()
        self._max_queue = max_queue
        self._queue: deque[tuple[str | bytes, int]] = deque()
        self._sender = sender
        self._drain: asyncio.Task[None] | None = None
        self._replay_queued = 0
        self.close_code: int | None = None
        self.close_reason = ""

    def push(self, frames: list[Frame]) -> None:
        """Live frames from the hub; held back while the replay is being read."""
        self.send_frames(self.resume.on_live(frames))

    def send_frames(self, frames: list[Frame], replayed: bool = False) -> None:
        """Replayed frames do not count against the queue's bound (the stream's length bounds
        them) and their age is not award-to-socket lag."""
        if replayed:
            self._replay_queued += len(frames)
            for frame in frames:
                self.enqueue(frame.encoded(self.encoding), REPLAYED)
        else:
            for frame in frames:
                self.enqueue(frame.encoded(self.encoding), frame.sid[0])

    def enqueue(self, payload: str | bytes, stamp_ms: int = 0) -> None:
        if self.close_code is not None:
            return
        if len(self._queue) - self._replay_queued >= self._max_queue:
            metrics.SLOW_CONSUMERS.inc()
            self.evict(CloseCode.SLOW_CONSUMER, "too far behind; reconnect and resume from your last id")
            return
        self._queue.append((payload, stamp_ms))
        self._start_drain()

    def evict(self, code: int, reason: str) -> None:
        """Close after nothing more: what is queued is dropped, the client resumes from its last id."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self._queue.clear()
            self._replay_queued = 0
            self._start_drain()

    async def finish(self) -> None:
        """Wait until the close frame (if any) is out, or give up after a while."""
        if self._drain is not None and not self._drain.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._drain), timeout=5.0)
            except (asyncio.TimeoutError, Exception):
                self._drain.cancel()

    def _start_drain(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(self._drain_queue())

    async def _drain_queue(self) -> None:
        sender = self._sender
        try:
            while self._queue:
                payload, stamp_ms = self._queue.popleft()
                await sender.send(payload)  # waits while the socket is not writable
                metrics.FRAMES_SENT.inc()
                if stamp_ms == REPLAYED:
                    self._replay_queued -= 1
                elif stamp_ms:
                    metrics.FEED_LAG_SECONDS.observe(max(0.0, time.time() - stamp_ms / 1000))
            if self.close_code is not None:
                await sender.close(self.close_code, self.close_reason)
        except Exception:  # the socket is gone; the endpoint's receive loop sees the disconnect
            self._queue.clear()


class Tap:
    """One more channel a socket listens to (a watched object's owner's): the hub hands every
    message's frames to ``push``, which picks what the socket is owed and sends it on ``conn``."""

    __slots__ = ("conn", "channel", "push")

    def __init__(self, conn: LiveConnection, channel: bytes, push: Callable[[list[Frame]], None]) -> None:
        self.conn = conn
        self.channel = channel
        self.push = push


class Sender(Protocol):
    async def send(self, payload: str | bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class TooManySockets(Exception):
    """The member already holds ``Hub.max_per_member`` sockets on this process."""


class Hub:
    """Local sockets by channel, and the subscriptions that feed them.

    On one server, one subscriber (one connection) for the process, opened at start and opened
    again after a loss, which every socket resumes from. On a cluster, one subscriber per primary
    that owns a channel some local socket follows, opened at the first such socket: a shard's
    loss (its primary failed) or a channel the server dropped (its slot moved) resumes only the
    sockets that followed it, and the slot map is read again so that their reconnections
    subscribe where the channels now live.
    """

    #: Sockets one member may hold on one process: each may pin a replay and a queue in memory.
    max_per_member = 16

    def __init__(self, redis: Redis | Shards) -> None:
        # One server: the client whose connection settings the hub's own connection takes. A
        # cluster: what names each channel's shard and opens a client for it.
        self._shards = redis if isinstance(redis, Shards) else None
        self._redis = redis if isinstance(redis, Redis) else None
        self._groups: dict[bytes, set[LiveConnection]] = {}
        self._taps: dict[bytes, set[Tap]] = {}  # channels tapped by watching sockets
        self._subscribers: dict[str, Subscriber] = {}  # by shard ("" on one server)
        self._opening: dict[str, asyncio.Task[Subscriber]] = {}
        self._shard_of: dict[bytes, str] = {}  # a followed channel's shard
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = False
        self._sockets = 0

    @property
    def healthy(self) -> bool:
        if self._shards is not None:  # a lost shard is dropped and opened again on demand
            return all(s.connected for s in self._subscribers.values())
        subscriber = self._subscribers.get("")
        return subscriber is not None and subscriber.connected

    @property
    def sockets(self) -> int:
        """Sockets joined (an O(1) count: the GC pacer reads it every few seconds)."""
        return self._sockets

    async def start(self) -> None:
        if self._shards is None:
            self._subscribers[""] = await self._open("")

    async def join(self, conn: LiveConnection) -> None:
        """Return once messages for the member can no longer be missed by this connection."""
        shard, subscriber = await self._subscriber(conn.channel)
        group = self._groups.setdefault(conn.channel, set())
        if len(group) >= self.max_per_member:
            raise TooManySockets(f"at most {self.max_per_member} live connections per member")
        group.add(conn)
        self._shard_of[conn.channel] = shard
        self._sockets += 1
        try:
            await subscriber.subscribe(conn.channel)
        except BaseException:
            self.leave(conn)
            raise

    def leave(self, conn: LiveConnection) -> None:
        group = self._groups.get(conn.channel)
        if group is None or conn not in group:
            return
        group.discard(conn)
        self._sockets -= 1
        if not group:
            del self._groups[conn.channel]
            if conn.channel not in self._taps:
                self._unsubscribe(conn.channel)

    async def tap(self, tap: Tap) -> None:
        """Return once messages on ``tap.channel`` can no longer be missed by ``tap.push``. The
        socket stays joined on its own channel; ``untap`` ends the tap (the endpoint untaps every
        tap of a socket before the socket leaves)."""
        shard, subscriber = await self._subscriber(tap.channel)
        self._taps.setdefault(tap.channel, set()).add(tap)
        self._shard_of[tap.channel] = shard
        try:
            await subscriber.subscribe(tap.channel)
        except BaseException:
            self.untap(tap)
            raise

    def untap(self, tap: Tap) -> None:
        taps = self._taps.get(tap.channel)
        if taps is None or tap not in taps:
            return  # untapped already, or ended with its channel (the socket was told to resume)
        taps.discard(tap)
        if not taps:
            del self._taps[tap.channel]
            if tap.channel not in self._groups:
                self._unsubscribe(tap.channel)

    def _unsubscribe(self, channel: bytes) -> None:
        subscriber = self._subscribers.get(self._shard_of.pop(channel, ""))
        if subscriber is not None and subscriber.connected:
            subscriber.unsubscribe(channel)

    async def close(self) -> None:
        self._closing = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        for group in self._groups.values():
            for conn in group:
                conn.evict(CloseCode.SERVICE_RESTART, "the service is restarting; reconnect and resume")
        for subscriber in self._subscribers.values():
            subscriber.close()

    # --- subscribers ----------------------------------------------------------------------------

    async def _subscriber(self, channel: bytes) -> tuple[str, Subscriber]:
        """The channel's shard and its connected subscriber (opened on a cluster's first need)."""
        shard = "" if self._shards is None else self._shards.shard_of(channel)
        subscriber = self._subscribers.get(shard)
        if subscriber is None and self._shards is not None:
            subscriber = await self._open_shard(shard)
        if subscriber is None or not subscriber.connected:
            raise ConnectionError("the live feed is reconnecting to the store")
        return shard, subscriber

    async def _open(self, shard: str) -> Subscriber:
        redis = self._redis if self._shards is None else await self._shards.client(shard)
        assert redis is not None
        subscriber = Subscriber(
            redis, self._dispatch, lambda exc: self._lost(shard, exc), on_dropped=self._dropped
        )
        await subscriber.connect()
        return subscriber

    async def _open_shard(self, shard: str) -> Subscriber:
        """The shard's subscriber, opened once however many sockets ask for it at the same time."""
        task = self._opening.get(shard)
        if task is None:
            task = self._opening[shard] = asyncio.get_running_loop().create_task(self._open(shard))
            task.add_done_callback(lambda _: self._opening.pop(shard, None))
        subscriber = await asyncio.shield(task)
        if self._subscribers.get(shard) is None and subscriber.connected:
            self._subscribers[shard] = subscriber
        return self._subscribers.get(shard, subscriber)

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        group = self._groups.get(channel)
        taps = self._taps.get(channel) if self._taps else None  # no tap on the process: one test
        if not group and not taps:
            return
        try:
            frames = frames_from_message(data)
        except Exception:  # a message we cannot read must not take the subscription down
            log.exception("unreadable live-feed message on %r dropped", channel)
            return
        if group:
            for conn in tuple(group):
                conn.push(frames)
        if taps:
            for tap in tuple(taps):
                tap.push(frames)

    def _evict(self, channels: list[bytes], reason: str) -> None:
        """Close every socket following or tapping these channels: a watcher resumes its watches
        (by its last watched ids) when it reconnects, as it resumes its own feed."""
        for channel in channels:
            group = self._groups.pop(channel, set())
            taps = self._taps.pop(channel, set())
            self._shard_of.pop(channel, None)
            self._sockets -= len(group)
            for conn in group:
                conn.evict(CloseCode.RESUME, reason)
            for tap in taps:
                tap.conn.evict(CloseCode.RESUME, reason)

    def _lost(self, shard: str, exc: Exception | None) -> None:
        if self._closing:
            return
        metrics.REDIS_ERRORS.inc()
        self._subscribers.pop(shard, None)
        if self._shards is None:
            log.warning("live feed lost its Redis subscription; %d sockets told to resume", self.sockets)
            self._evict([*self._groups, *self._taps], "the live feed was interrupted; reconnect and resume")
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())
            return
        channels = [c for c, s in self._shard_of.items() if s == shard]
        log.warning("live feed lost its subscription to shard %s; %d channels told to resume", shard, len(channels))
        self._evict(channels, "the live feed was interrupted; reconnect and resume")
        self._shards.refresh_soon()

    def _dropped(self, channel: bytes) -> None:
        """The server ended a subscription itself: the channel's slot moved to another shard."""
        if self._closing:
            return
        self._evict([channel], "the live feed moved; reconnect and resume")
        if self._shards is not None:
            self._shards.refresh_soon()

    async def _reconnect_loop(self) -> None:
        delay = 0.1
        while not self._closing:
            try:
                await self.start()
                log.info("live feed subscription restored")
                return
            except Exception as exc:  # refused, wrong password, timed out: keep trying
                log.warning("live feed reconnect failed: %s", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
