"""One Redis sharded pub/sub connection, dispatching each message as it is parsed.

The hub needs three things a general client makes costly at thousands of messages a second:
to dispatch each message synchronously as it is parsed, to know when a SUBSCRIBE has taken
hold (so a resuming socket replays only after it can no longer miss a live message), and to
hear at once when the connection is lost (so every socket is told to resume). This module is
those three things over ``engine.resp``, and nothing else.

Channels are *sharded* (``SSUBSCRIBE``, and the member script publishes with ``SPUBLISH``): on one server that is
plain pub/sub, and on a cluster a message stays on the shard that owns its channel's slot instead
of being copied to every node, so the hub holds one subscriber per primary it needs. When a
channel's slot moves away (resharding, a failover), the server ends that subscription itself
with an ``sunsubscribe`` nobody asked for: ``on_dropped(channel)`` tells the hub, whose sockets
on that channel resume. An error reply while a subscription waits (MOVED: the slot map was
behind) aborts the connection, which fails the waiter and reports the loss like any other.

A connection can also die without a word: a NAT or firewall that drops an idle flow leaves it
half-open, and every socket of the node would go silent while ``/healthz`` stays green. So the
subscriber PINGs every ``ping_interval_s`` (subscribed, RESP2 answers with a ``pong`` push;
otherwise ``+PONG``) and aborts a connection that has sent nothing for ``ping_deadline_s``,
which reports the loss like any other: the hub tells its sockets to resume and reconnects.
A silent server is noticed within ``ping_deadline_s + ping_interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio import Redis

from engine.resp import RespConnection, command, open_connection

OnMessage = Callable[[bytes, bytes], None]
OnLost = Callable[[Exception | None], None]

PING_INTERVAL_S = 5.0
PING_DEADLINE_S = 10.0  # two missed pongs: one late reply on a busy server is not an outage
_PING = command("PING")

log = logging.getLogger("rekindle.subscriber")


class Subscriber:
    """Subscribe and unsubscribe channels; ``on_message(channel, data)`` for every message."""

    def __init__(
        self,
        redis: Redis,
        on_message: OnMessage,
        on_lost: OnLost,
        *,
        on_dropped: Callable[[bytes], None] | None = None,
        ping_interval_s: float = PING_INTERVAL_S,
        ping_deadline_s: float = PING_DEADLINE_S,
    ) -> None:
        self._redis = redis
        self._ping_interval_s = ping_interval_s
        self._ping_deadline_s = ping_deadline_s
        self._heartbeat: asyncio.Task[None] | None = None
        self._on_message = on_message
        self._on_lost_cb = on_lost
        self._on_dropped = on_dropped
        self._conn: RespConnection | None = None
        self._subscribed: set[bytes] = set()  # confirmed, with no UNSUBSCRIBE sent since
        self._outstanding: dict[bytes, int] = {}  # SUBSCRIBEs sent, not yet confirmed
        self._last_sent: dict[bytes, bytes] = {}  # b"SUBSCRIBE" | b"UNSUBSCRIBE", per channel
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    async def connect(self) -> None:
        # Pub/sub channels are server-wide: no SELECT, and none may follow SUBSCRIBE anyway.
        self._conn = await open_connection(self._redis, on_push=self._on_push, on_lost=self._on_lost, select_db=False)
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(self._conn))

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._conn is not None:
            self._conn.close()

    def is_subscribed(self, channel: bytes) -> bool:
        return channel in self._subscribed

    async def subscribe(self, channel: bytes) -> None:
        """Return once the server has confirmed a subscription that no later UNSUBSCRIBE undoes."""
        if self.is_subscribed(channel):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(future)
        if self._last_sent.get(channel) != b"SUBSCRIBE":  # none in flight since the last UNSUBSCRIBE
            self._last_sent[channel] = b"SUBSCRIBE"
            self._outstanding[channel] = self._outstanding.get(channel, 0) + 1
            self._write(command("SSUBSCRIBE", channel))
        await future

    def unsubscribe(self, channel: bytes) -> None:
        # Forgotten now, not at the confirmation: a SUBSCRIBE sent after this must go out.
        self._subscribed.discard(channel)
        self._last_sent[channel] = b"UNSUBSCRIBE"
        self._write(command("SUNSUBSCRIBE", channel))

    def _write(self, data: bytes) -> None:
        if self._conn is None or not self._conn.connected:
            raise ConnectionError("the pub/sub connection is closed")
        self._conn.transport.write(data)

    async def _beat(self, conn: RespConnection) -> None:
        """PING on an interval; abort the connection once it has been silent past the deadline.
        Any reply counts as life (``last_progress``): a pong, a message, even an error reply."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._ping_interval_s)
            if not conn.connected:
                return
            silent_s = loop.time() - conn.last_progress
            if silent_s > self._ping_deadline_s:
                log.warning("live feed subscription silent for %.1f s; reconnecting", silent_s)
                conn.abort()  # connection_lost follows: the loss is reported as any other
                return
            conn.transport.write(_PING)

    def _on_push(self, reply: Any) -> None:
        if not isinstance(reply, list):
            if isinstance(reply, hiredis.ReplyError) and self._outstanding and self._conn is not None:
                # The answer to a waiting SSUBSCRIBE (MOVED, CLUSTERDOWN: errors name no channel):
                # start over, on the node the refreshed slot map names.
                log.warning("live feed subscription refused: %s; reconnecting", reply)
                self._conn.abort()
            return  # else a heartbeat's answer outside subscribed mode: +PONG, or an error (LOADING)
        kind, channel = reply[0], reply[1]
        if kind == b"smessage" or kind == b"message":
            self._on_message(channel, reply[2])
        elif kind == b"ssubscribe":
            left = self._outstanding.get(channel, 1) - 1
            if left > 0:
                self._outstanding[channel] = left
                return  # a later SUBSCRIBE (after an UNSUBSCRIBE) is still to be confirmed
            self._outstanding.pop(channel, None)
            if self._last_sent.get(channel) != b"SUBSCRIBE":
                return  # an UNSUBSCRIBE followed: this confirmation no longer holds
            self._subscribed.add(channel)
            for future in self._waiters.pop(channel, []):
                if not future.done():
                    future.set_result(None)
        elif kind == b"sunsubscribe":
            if self._last_sent.get(channel) == b"UNSUBSCRIBE":
                del self._last_sent[channel]  # settled: nothing to remember about the channel
            elif channel in self._subscribed:  # ended by the server: the channel's slot moved
                self._subscribed.discard(channel)
                self._last_sent.pop(channel, None)
                if self._on_dropped is not None:
                    self._on_dropped(channel)

    def _on_lost(self, exc: Exception | None) -> None:
        error = ConnectionError("the pub/sub connection was lost")
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(error)
        self._waiters.clear()
        self._subscribed.clear()
        self._outstanding.clear()
        self._last_sent.clear()
        self._on_lost_cb(exc)
