"""A minimal RESP connection: requests written as bytes, replies matched to them in order.

RESP answers the commands of one connection in the order they were sent, so a reply needs no
tag: the connection keeps a queue of futures and resolves the oldest with each reply hiredis
parses. That is all the award path needs from a client, and it costs a fraction of a general
one per call: no pool checkout, no coroutine per reply, no per-read timeout context. A
subscriber passes ``on_push`` to receive pub/sub messages instead.

An error reply keeps its first word as ``status_code`` (``LOADING``, ``BUSY``, ``OOM``...), which
is what ``realtime.errors`` classifies; only error replies pay for that. A READONLY reply means
the server behind the connection is now a replica (a failover), where no write will ever
succeed: the connection retires itself, and its owner's next call opens a fresh one, whose
address lookup finds the new primary.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, OutOfMemoryError, ReadOnlyError, ResponseError, TryAgainError

OnPush = Callable[[list[Any]], None]
OnLost = Callable[[Exception | None], None]


def command(*parts: bytes | str | int) -> bytes:
    """One command in RESP, as a client sends it (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else part.encode() if isinstance(part, str) else b"%d" % part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


# redis-py's classes where it has one, so callers can catch the same thing from either client.
_ERROR_CLASSES: dict[str, type[ResponseError]] = {
    "NOSCRIPT": NoScriptError,
    "READONLY": ReadOnlyError,
    "OOM": OutOfMemoryError,
    "TRYAGAIN": TryAgainError,
}

# TCP keepalive: a peer that vanished without a FIN (NAT or firewall idle drop, a dead host)
# is noticed after about idle + interval * count seconds, and the probes keep NAT entries alive.
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 3


def reply_error(error: hiredis.ReplyError) -> ResponseError:
    """The exception for one error reply: message whole, its first word as ``status_code``."""
    message = str(error)
    code = message.split(" ", 1)[0]
    return _ERROR_CLASSES.get(code, ResponseError)(message, status_code=code)


class RespConnection(asyncio.Protocol):
    def __init__(self, on_push: OnPush | None = None, on_lost: OnLost | None = None) -> None:
        self._reader = hiredis.Reader()
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._on_push = on_push
        self._on_lost = on_lost
        self.transport: Any = None
        self.connected = False
        self.last_progress = 0.0  # loop time of the last reply, or of a send onto an idle connection

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.connected = True
        self.last_progress = asyncio.get_running_loop().time()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._pending
        while (reply := self._reader.gets()) is not False:
            if self._on_push is not None and (
                not pending or isinstance(reply, list) and reply and reply[0] in _PUSH_KINDS
            ):
                self._on_push(reply)  # a message, or the answer to a command sent without a future
                continue
            future = pending.popleft()
            if isinstance(reply, hiredis.ReplyError):
                error = reply_error(reply)
                if isinstance(error, ReadOnlyError):
                    self.retire()
                if not future.done():  # else the caller gave up; the reply is dropped
                    future.set_exception(error)
            elif not future.done():
                future.set_result(reply)
        self.last_progress = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connected = False
        error = ConnectionError(f"the Redis connection was lost ({exc or 'closed'})")
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)
        if self._on_lost is not None:
            self._on_lost(exc)

    # --- requests -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    def send(self, payload: bytes, futures: Sequence[asyncio.Future[Any]]) -> None:
        """Write ``payload`` (that many commands); each future gets its command's reply."""
        if not self.connected:
            error = ConnectionError("the Redis connection is closed")
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            return
        if not self._pending:
            self.last_progress = asyncio.get_running_loop().time()
        self._pending.extend(futures)
        self.transport.write(payload)

    async def call(self, *parts: bytes | str | int) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.send(command(*parts), [future])
        return await future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def retire(self) -> None:
        """Take no more requests and close. Replies still in flight are lost: their callers
        fail as on a lost connection, which is safe to retry (every script is idempotent)."""
        self.connected = False
        self.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


_PUSH_KINDS = frozenset(
    {b"message", b"subscribe", b"unsubscribe", b"smessage", b"ssubscribe", b"sunsubscribe", b"pong"}
)


async def open_connection(
    redis: Redis, on_push: OnPush | None = None, on_lost: OnLost | None = None, select_db: bool = True
) -> RespConnection:
    """A connection to the server ``redis`` points at, with its credentials and database."""
    pool = redis.connection_pool
    options = pool.connection_kwargs
    loop = asyncio.get_running_loop()

    def factory() -> RespConnection:
        return RespConnection(on_push, on_lost)

    timeout_s = options.get("socket_connect_timeout") or 5

    async def handshake() -> RespConnection:
        if options.get("path"):
            _, conn = await loop.create_unix_connection(factory, options["path"])
        else:
            tls = _tls_context(options) if "SSL" in pool.connection_class.__name__ else None
            transport, conn = await loop.create_connection(
                factory, options.get("host", "localhost"), options.get("port", 6379), ssl=tls
            )
            _keep_alive(transport.get_extra_info("socket"))
        try:
            if options.get("password"):
                user = options.get("username")
                await conn.call("AUTH", *((user,) if user else ()), options["password"])
            if select_db and int(options.get("db") or 0):
                await conn.call("SELECT", int(options["db"]))
        except BaseException:
            conn.close()
            raise
        return conn

    # The whole opening, AUTH included, under one deadline: a server that accepts and never
    # answers must fail the callers, not hang them.
    return await asyncio.wait_for(handshake(), timeout_s)


def _tls_context(options: dict[str, Any]) -> ssl_module.SSLContext:
    """The TLS settings redis-py took from the URL (CA file, verification), for our socket too."""
    context = ssl_module.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_cert_reqs") in ("none", ssl_module.CERT_NONE):
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    return context


def _keep_alive(sock: socket.socket | None) -> None:
    """Enable TCP keepalive with probes far sooner than the kernel's two-hour default."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, name):  # Linux; macOS has TCP_KEEPALIVE for the idle time
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
