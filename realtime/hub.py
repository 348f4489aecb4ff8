"""The WebSocket hub: one Redis subscription connection per process, dispatched to local sockets.

A channel is subscribed while at least one local socket of its member is open. The hub knows
frames and subscriptions, not game rules. If the subscription connection drops, messages may
have been missed, so every local socket is closed with ``RESUME``: clients reconnect, resume
from the last id they saw, and lose nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.asyncio import Redis

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


class Sender(Protocol):
    async def send(self, payload: str | bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class TooManySockets(Exception):
    """The member already holds ``Hub.max_per_member`` sockets on this process."""


class Hub:
    #: Sockets one member may hold on one process: each may pin a replay and a queue in memory.
    max_per_member = 16

    def __init__(self, redis: Redis | Callable[[], Awaitable[Redis]]) -> None:
        # For its connection settings (the hub opens a connection of its own); on a cluster, what
        # picks a node (engine.cluster.AnyNode).
        self._redis = redis
        self._groups: dict[bytes, set[LiveConnection]] = {}
        self._subscriber: Subscriber | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = False
        self._sockets = 0

    @property
    def healthy(self) -> bool:
        return self._subscriber is not None and self._subscriber.connected

    @property
    def sockets(self) -> int:
        """Sockets joined (an O(1) count: the GC pacer reads it every few seconds)."""
        return self._sockets

    async def start(self) -> None:
        subscriber = Subscriber(self._redis, self._dispatch, self._lost)
        await subscriber.connect()
        self._subscriber = subscriber

    async def join(self, conn: LiveConnection) -> None:
        """Return once messages for the member can no longer be missed by this connection."""
        subscriber = self._subscriber
        if subscriber is None or not subscriber.connected:
            raise ConnectionError("the live feed is reconnecting to the store")
        group = self._groups.setdefault(conn.channel, set())
        if len(group) >= self.max_per_member:
            raise TooManySockets(f"at most {self.max_per_member} live connections per member")
        group.add(conn)
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
            if self._subscriber is not None and self._subscriber.connected:
                self._subscriber.unsubscribe(conn.channel)

    async def close(self) -> None:
        self._closing = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        for group in self._groups.values():
            for conn in group:
                conn.evict(CloseCode.SERVICE_RESTART, "the service is restarting; reconnect and resume")
        if self._subscriber is not None:
            self._subscriber.close()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        group = self._groups.get(channel)
        if not group:
            return
        try:
            frames = frames_from_message(data)
        except Exception:  # a message we cannot read must not take the subscription down
            log.exception("unreadable live-feed message on %r dropped", channel)
            return
        for conn in tuple(group):
            conn.push(frames)

    def _lost(self, exc: Exception | None) -> None:
        if self._closing:
            return
        log.warning("live feed lost its Redis subscription; %d sockets told to resume", self.sockets)
        metrics.REDIS_ERRORS.inc()
        groups, self._groups = self._groups, {}
        self._sockets = 0
        for group in groups.values():
            for conn in group:
                conn.evict(CloseCode.RESUME, "the live feed was interrupted; reconnect and resume")
        self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

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
