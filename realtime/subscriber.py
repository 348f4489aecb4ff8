"""One Redis pub/sub connection per process, as a small asyncio protocol over hiredis.

The hub needs three things a general client makes costly at thousands of messages a second:
to dispatch each message synchronously as it is parsed, to know when a SUBSCRIBE has taken
hold (so a resuming socket replays only after it can no longer miss a live message), and to
hear at once when the connection is lost (so every socket is told to resume). This module is
those three things and nothing else.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url

OnMessage = Callable[[bytes, bytes], None]
OnLost = Callable[[Exception | None], None]


def _command(*parts: bytes | str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: "Subscriber") -> None:
        self._owner = owner
        self._reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._owner._on_reply(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._on_lost(exc)


class Subscriber:
    """Subscribe and unsubscribe channels; ``on_message(channel, data)`` for every message."""

    def __init__(self, url: str, on_message: OnMessage, on_lost: OnLost) -> None:
        self._url = url
        self._on_message = on_message
        self._on_lost_cb = on_lost
        self._protocol: _Protocol | None = None
        self._subscribed: set[bytes] = set()
        self._outstanding: dict[bytes, int] = {}  # SUBSCRIBEs sent, not yet confirmed
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._replies: list[asyncio.Future[Any]] = []  # plain command replies (AUTH, PING)
        self.connected = False

    async def connect(self) -> None:
        options = parse_url(self._url)
        context = ssl.create_default_context() if self._url.startswith("rediss://") else None
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: _Protocol(self), options.get("host", "localhost"), options.get("port", 6379), ssl=context
        )
        self._protocol = protocol
        self.connected = True
        if options.get("password"):
            user = options.get("username")
            auth = ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
            reply = await self._call(*auth)
            if isinstance(reply, Exception):
                self.close()
                raise reply

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()

    def is_subscribed(self, channel: bytes) -> bool:
        return channel in self._subscribed and not self._outstanding.get(channel)

    async def subscribe(self, channel: bytes) -> None:
        """Return once the server has confirmed the subscription."""
        if self.is_subscribed(channel):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(future)
        if not self._outstanding.get(channel):
            self._outstanding[channel] = self._outstanding.get(channel, 0) + 1
            self._write(_command("SUBSCRIBE", channel))
        await future

    def unsubscribe(self, channel: bytes) -> None:
        # Forgotten now, not at the confirmation: a SUBSCRIBE sent after this must go out.
        self._subscribed.discard(channel)
        self._write(_command("UNSUBSCRIBE", channel))

    async def _call(self, *parts: str) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies.append(future)
        self._write(_command(*parts))
        return await future

    def _write(self, data: bytes) -> None:
        if self._protocol is None or self._protocol.transport is None or not self.connected:
            raise ConnectionError("the pub/sub connection is closed")
        self._protocol.transport.write(data)

    def _on_reply(self, reply: Any) -> None:
        if isinstance(reply, list) and reply:
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[1], reply[2])
                return
            if kind == b"subscribe":
                channel = reply[1]
                self._outstanding[channel] = self._outstanding.get(channel, 1) - 1
                if self._outstanding[channel] <= 0:
                    del self._outstanding[channel]
                self._subscribed.add(channel)
                for future in self._waiters.pop(channel, []):
                    if not future.done():
                        future.set_result(None)
                return
            if kind == b"unsubscribe":
                if not self._outstanding.get(reply[1]):
                    self._subscribed.discard(reply[1])
                return
        if self._replies:
            future = self._replies.pop(0)
            if not future.done():
                future.set_result(reply)

    def _on_lost(self, exc: Exception | None) -> None:
        self.connected = False
        error = ConnectionError("the pub/sub connection was lost")
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(error)
        for future in self._replies:
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()
        self._replies.clear()
        self._subscribed.clear()
        self._outstanding.clear()
        self._on_lost_cb(exc)
