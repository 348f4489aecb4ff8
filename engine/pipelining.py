"""Auto-pipelining: script calls made in the same event-loop tick share one write.

Under load, many request handlers reach their one EVALSHA within the same loop iteration. Each
sending its own command costs a pool checkout, a write syscall and a read wake-up; queued
together they cost one write, and the replies come back on one connection in order (ioredis
calls this ``enableAutoPipelining``). Writes never wait for earlier replies, and a tick's calls
go out in writes of at most ``max_batch`` (16 measured best on 2 cores: 1,000 made the server
and this process take turns, 8 paid too many writes), so the server works through one write
while this process parses the next requests.

Error replies come back per call (a duplicate here does not fail a neighbour there). A NOSCRIPT
reply makes the caller load the script and send its call again: every script of ours is
idempotent by its dedupe step, so a resend can never apply twice. A connection that stops
answering for ``timeout_s`` is aborted, failing its calls, which the HTTP layer reports as 503.
A READONLY reply (a failover made the server a replica) retires the connection at once (see
``engine.resp``): ``_send`` finds it closed and the next call opens a fresh one, whose address
lookup finds the new primary. Busy or recovering replies (LOADING, BUSY, OOM...) are per call,
like any error reply; the HTTP layer makes them 503 with Retry-After.

**Order.** One connection answers in the order it was written, so ``run_many``'s calls are
applied in the order given but for a NOSCRIPT call, sent again after the rest. ``run_chain``
needs more: a call must not apply unless the one before it did. Commands before a last call
go with it in one MULTI/EXEC (a Command cannot meet NOSCRIPT, and a refusal of any of them
aborts the lot), so the award that schedules its lot's expiry job keeps its one write; any
other chain is sent call by call, each awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from engine.resp import RespConnection, open_connection, reply_error
from engine.runner import Call, ChainBroken, Target, broken_after
from engine.scripts import Command



class NotReplicated(RedisError):
    """A write was applied by the primary but fewer replicas than asked confirmed it within the
    wait: the caller answers 503, and the retry by id is safe (a duplicate if it survived)."""


class AutoPipeline:
    def __init__(
        self, redis: Redis, timeout_s: float = 10.0, max_batch: int = 16, wait_replicas: int = 0, wait_timeout_ms: int = 100
    ) -> None:
        self._redis = redis  # for its connection settings, and to load scripts
        self._timeout_s = timeout_s
        # WAIT after every write when asked: each call's reply is handed over only once that many
        # replicas have the write (a failover can then lose no acknowledged call). One WAIT per
        # write, not per call: it covers everything the connection sent before it.
        self._wait_replicas = wait_replicas
        wait: tuple[Any, ...] = ("WAIT", wait_replicas, wait_timeout_ms)
        self._wait = hiredis.pack_command(wait) if wait_replicas else b""
        # A tick's calls go out in writes of at most this many, the first as soon as it fills:
        # the server starts on them while this process still parses the rest of the tick.
        self._max_batch = max_batch
        self._conn: RespConnection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._queue: list[bytes] = []
        self._queued_calls = 0  # calls in the queue: a transaction is one, though four commands
        self._futures: list[asyncio.Future[Any]] = []
        self._waiting: list[tuple[list[bytes], list[asyncio.Future[Any]]]] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False

    def queue(self, target: Target, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue one call for this tick's write; the future resolves to its reply or error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(target.encode(keys, args))
        self._futures.append(future)
        self._queued_calls += 1
        if self._queued_calls >= self._max_batch:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    async def call(self, target: Target, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One call, reloading the script once if the server lost it (a Command never meets NOSCRIPT)."""
        try:
            return await self.queue(target, keys, args)
        except NoScriptError:
            await target.load(self._redis)
            return await self.queue(target, keys, args)

    async def call_asking(self, target: Target, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One call preceded by ASKING, in one write (a cluster slot half-way through a migration:
        the target node takes the call only so announced)."""
        for _ in range(2):
            _, reply = await self._write_now([_ASKING, target.encode(keys, args)])
            if isinstance(reply, NoScriptError):
                await target.load(self._redis)
                continue
            if isinstance(reply, BaseException):
                raise reply
            return reply
        raise NoScriptError(f"NOSCRIPT {target.name} still missing after loading it")

    async def run_many(self, calls: Sequence[Call]) -> list[Any]:
        """Replies in order, errors as values; applied in the order given, but for a call answered
        NOSCRIPT, sent again after the others once its script is loaded. A few calls join this
        tick's writes like any call; a batch is sent as one write of its own. Either way one
        connection carries them in order."""
        if len(calls) <= self._max_batch:
            replies = []
            # Replies come in order: once the first is in, the rest are too (no gather needed).
            for future in [self.queue(t, k, a) for t, k, a in calls]:
                try:
                    replies.append(await future)
                except Exception as exc:  # noqa: BLE001 - an error reply is a value here
                    replies.append(exc)
        else:
            replies = await self._write_now([t.encode(k, a) for t, k, a in calls])
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            for target in {calls[i][0] for i in missing}:
                await target.load(self._redis)
            retried = await self._write_now([calls[i][0].encode(calls[i][1], calls[i][2]) for i in missing])
            for i, reply in zip(missing, retried):
                replies[i] = reply
        return replies

    async def run_chain(self, calls: Sequence[Call]) -> list[Any]:
        """Each call applied only after the one before it succeeded; replies in order, errors as
        values, a ``ChainBroken`` for each call not applied because another failed. When every
        call but the last is a ``Command``, all go in one transaction joining this tick's write
        (no round trip more than a lone call: the award path's schedule-then-award); otherwise
        call by call, each reply awaited before the next call is sent."""
        if len(calls) > 1 and all(isinstance(t, Command) for t, _, _ in calls[:-1]):
            return await self._transaction(calls)
        replies: list[Any] = []
        for call in calls:
            try:
                replies.append(await self.call(*call))
            except Exception as exc:  # noqa: BLE001 - an error reply is a value here
                replies.append(exc)
                break
        return broken_after(calls, replies + [None] * (len(calls) - len(replies)))

    def send(self, target: Target, keys: Sequence[str], args: Sequence[Any]) -> None:
        """One call whose reply nobody waits for (joining this tick's write); an error is dropped:
        the caller only sends what something else makes good if it is lost."""
        self.queue(target, keys, args).add_done_callback(_consume)

    async def aclose(self) -> None:
        self._closed = True  # calls from now on fail; none opens a connection again
        if self._connecting is not None:
            with contextlib.suppress(Exception):
                await self._connecting
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _transaction(self, calls: Sequence[Call]) -> list[Any]:
        """``calls`` (every one but the last a Command) in MULTI/EXEC, queued whole in this tick's
        write: applied in order, back to back. A refusal of any (OOM, LOADING, READONLY, a
        cluster's MOVED...) aborts the lot, and that call's error names the chain's break; a last
        call answered NOSCRIPT is sent again once the Commands applied and its script is loaded.
        A Command that fails only when run (a wrong type) leaves the rest applied: their own replies."""
        loop = asyncio.get_running_loop()
        commands = [_MULTI, *(t.encode(k, a) for t, k, a in calls), _EXEC]
        futures = [loop.create_future() for _ in commands]
        # Queued together, so no other call of the tick lands inside the transaction.
        self._queue += commands
        self._futures += futures
        self._queued_calls += 1
        if self._queued_calls >= self._max_batch:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        # Replies come in order: awaited one by one (no gather: this is a hot path's call).
        answers: list[Any] = []
        for future in futures:
            try:
                answers.append(await future)
            except Exception as exc:  # noqa: BLE001 - an error reply is a value here
                answers.append(exc)
        began, *queued, done = answers
        if isinstance(began, ResponseError):  # no transaction (MULTI denied): each ran on its own
            return queued
        if isinstance(done, list):  # applied: each call's own reply (a Command may fail when run)
            replies = [reply_error(r) if isinstance(r, hiredis.ReplyError) else r for r in done]
            if isinstance(replies[-1], NoScriptError):  # the last did not run: once more, after the rest
                failed = next((i for i, r in enumerate(replies) if isinstance(r, BaseException)), len(replies) - 1)
                if failed < len(replies) - 1:
                    replies[-1] = ChainBroken(failed, calls[failed][0], replies[failed])
                else:
                    try:
                        replies[-1] = await self.call(*calls[-1])
                    except Exception as exc:  # noqa: BLE001 - an error reply is a value here
                        replies[-1] = exc
            return replies
        if not isinstance(done, ResponseError):  # the connection failed (or WAIT fell short): each call shares its fate
            return [done] * len(calls)
        # EXECABORT, or EXEC refused: nothing was applied; the first refused call broke the chain.
        failed = next((i for i, r in enumerate(queued) if isinstance(r, ResponseError)), 0)
        cause = queued[failed] if isinstance(queued[failed], ResponseError) else done
        return [cause if i == failed else ChainBroken(failed, calls[failed][0], cause) for i in range(len(calls))]

    async def _write_now(self, commands: list[bytes]) -> list[Any]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self._send(commands, futures)
        return list(await asyncio.gather(*futures, return_exceptions=True))

    def _flush(self) -> None:
        # A scheduled flush may find the queue already sent by a full batch; it sends what is left.
        self._flush_scheduled = False
        commands, futures = self._queue, self._futures
        self._queue, self._futures = [], []
        self._queued_calls = 0
        if commands:
            self._send(commands, futures)

    def _send(self, commands: list[bytes], futures: list[asyncio.Future[Any]]) -> None:
        if self._closed:
            for future in futures:
                if not future.done():
                    future.set_exception(ConnectionError("the award pipeline is closed"))
            return
        conn = self._conn
        if conn is not None and conn.connected and not self._waiting:
            self._write(conn, commands, futures)
            return
        self._waiting.append((commands, futures))
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        try:
            conn = await open_connection(self._redis)
        except Exception as exc:  # every call waiting for this connection fails with it
            waiting, self._waiting = self._waiting, []
            error = ConnectionError(f"cannot reach Redis: {exc}")
            for _, futures in waiting:
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            return
        finally:
            self._connecting = None
        self._conn = conn
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        waiting, self._waiting = self._waiting, []
        for commands, futures in waiting:
            self._write(conn, commands, futures)

    def _write(self, conn: RespConnection, commands: list[bytes], futures: list[asyncio.Future[Any]]) -> None:
        if not self._wait:
            conn.send(b"".join(commands), futures)
            return
        loop = asyncio.get_running_loop()
        replies = [loop.create_future() for _ in futures]
        confirmed = loop.create_future()
        confirmed.add_done_callback(lambda done: _hand_over(done, replies, futures, self._wait_replicas))
        conn.send(b"".join(commands) + self._wait, [*replies, confirmed])

    async def _watch(self) -> None:
        """Abort a connection that has had calls outstanding and no reply for ``timeout_s``."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self._timeout_s / 4))
            conn = self._conn
            if conn is not None and conn.pending and loop.time() - conn.last_progress > self._timeout_s:
                conn.abort()  # its pending calls fail; the next call opens a new connection


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as never retrieved


def _hand_over(
    confirmed: asyncio.Future[Any], replies: list[asyncio.Future[Any]], callers: list[asyncio.Future[Any]], wanted: int
) -> None:
    """The write's WAIT has answered (or its connection failed): each caller gets its reply if
    enough replicas have it, else the reason it cannot be called safe."""
    failure: BaseException | None = confirmed.exception()
    if failure is None and int(confirmed.result()) < wanted:
        failure = NotReplicated(f"{confirmed.result()} of {wanted} replicas confirmed the write in time")
    for reply, caller in zip(replies, callers):
        if caller.done():
            continue
        error = reply.exception() if reply.done() else failure
        if error is not None:
            caller.set_exception(error)  # an error reply stands; a success is only as good as WAIT
        elif failure is not None:
            caller.set_exception(failure)
        else:
            caller.set_result(reply.result())


_ASKING = hiredis.pack_command(("ASKING",))
_MULTI = hiredis.pack_command(("MULTI",))
_EXEC = hiredis.pack_command(("EXEC",))
