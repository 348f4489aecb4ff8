"""Auto-pipelining: script calls made in the same event-loop tick share one write.

Under load, many request handlers reach their one EVALSHA within the same loop iteration. Each
sending its own command costs a pool checkout, a write syscall and a read wake-up; queued
together they cost one of each, which is how the full award path keeps pace with a bare
endpoint that does nothing but one EVALSHA (ioredis calls this ``enableAutoPipelining``).

Error replies come back per command (a duplicate here does not fail a neighbour there). A
NOSCRIPT reply makes the batch load the script and resend only the calls that hit it: every
script of ours is idempotent by its dedupe step, so a resend can never apply twice.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from engine.scripts import LuaScript

Call = tuple[LuaScript, Sequence[str], Sequence[Any], asyncio.Future[Any]]


class AutoPipeline:
    def __init__(self, redis: Redis, max_batch: int = 1000, timeout_s: float = 10.0) -> None:
        self._redis = redis
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._queue: list[Call] = []
        self._flush_scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()

    def evalsha(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue one call; the future resolves to its reply (or raises its error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, future))
        if len(self._queue) >= self._max_batch:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    async def run_many(self, calls: Sequence[tuple[LuaScript, Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Send a known batch as one write on one connection, so it applies in its own order.

        Replies come back in order, errors as values. It does not join the tick's queue: a
        batch split across two writes (and two connections) could apply out of order.
        """
        loop = asyncio.get_running_loop()
        batch: list[Call] = [(s, k, a, loop.create_future()) for s, k, a in calls]
        await self._send(batch)
        return [f.exception() or f.result() for *_, f in batch]

    async def aclose(self) -> None:
        if self._queue:
            self._flush()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._queue = self._queue, []
        if not batch:
            return
        task = asyncio.ensure_future(self._send(batch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send(self, batch: list[Call]) -> None:
        try:
            replies = await self._roundtrip(batch)
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if missing:
                for script in {batch[i][0] for i in missing}:
                    await script.load(self._redis)
                retried = await self._roundtrip([batch[i] for i in missing])
                for i, reply in zip(missing, retried):
                    replies[i] = reply
        except Exception as exc:  # connection lost, timeout: every caller sees it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), reply in zip(batch, replies):
            if future.done():  # the caller gave up (cancelled); its reply is simply dropped
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _roundtrip(self, batch: list[Call]) -> list[Any]:
        pool = self._redis.connection_pool
        conn = await pool.get_connection()
        try:
            payload = b"".join([_evalsha(s.sha, k, a) for s, k, a, _ in batch])
            await conn.send_packed_command(payload, check_health=False)
            replies: list[Any] = []
            # One deadline for the whole batch rather than one per reply read.
            async with asyncio.timeout(self._timeout_s):
                for _ in batch:
                    try:
                        replies.append(await conn.read_response(disable_decoding=True, timeout=math.inf))
                    except ResponseError as exc:
                        replies.append(exc)
            return replies
        except BaseException:
            # A half-read connection must never go back to the pool.
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)


def _evalsha(sha: str, keys: Sequence[str], args: Sequence[Any]) -> bytes:
    """One EVALSHA in RESP: what redis-py's packer does, without its per-argument checks."""
    parts: list[bytes] = [b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (3 + len(keys) + len(args), sha.encode())]
    count = b"%d" % len(keys)
    parts.append(b"$%d\r\n%s\r\n" % (len(count), count))
    for item in (*keys, *args):
        data = item if isinstance(item, bytes) else item.encode() if isinstance(item, str) else b"%d" % item
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)
