"""The ``Runner`` promises, held for the runner the session's server gets (``AutoPipeline`` on one
server, ``ClusterRunner`` under ``REKINDLE_TEST_CLUSTER=1``): ``run_many``'s order within a slot,
``run_chain``'s across slots, NOSCRIPT and failures in a chain, and ``Command`` calls."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from engine.jobs import expire_job_id, jobs_key, shard_of
from engine.pipelining import AutoPipeline
from engine.runner import ChainBroken, Runner
from engine.scripts import Command, LuaScript
from tests.engine.test_operations import local_midnight_after, lots_of, lots_program

RPUSH, GET, SET, ZADD = Command("RPUSH"), Command("GET"), Command("SET"), Command("ZADD")
#: The chain-order test's first call keeps its server busy this long (CPU seconds, so at least as
#: long in real time); a second call that did not wait for it starts within far less.
BUSY_S = 0.2


def script(name: str, source: str) -> LuaScript:
    """A test's own script, never loaded beforehand: the runner loads it on NOSCRIPT."""
    data = source.encode()
    return LuaScript(name, data, hashlib.sha1(data).hexdigest())


PUSH = script("push.lua", "return redis.call('RPUSH', KEYS[1], ARGV[1])")
FAIL = script("fail.lua", "return redis.error_reply('ERR boom')")
# Records the server's time (µs) at KEYS[1] when the script starts (TIME is fixed in a script).
MARK = script("mark.lua", "local t = redis.call('TIME') return redis.call('SET', KEYS[1], t[1] * 1000000 + t[2])")
BUSY_MARK = script(
    "busy_mark.lua",
    "local t = redis.call('TIME') redis.call('SET', KEYS[1], t[1] * 1000000 + t[2])\n"
    "local start = os.clock() while os.clock() - start < tonumber(ARGV[1]) do end return 'done'",
)


def spread(e: Any, count: int) -> list[str]:
    """``count`` key prefixes of the test's own, each its own hash tag; on a cluster each tag's
    slot on a different primary (so ``count`` is at most the primaries)."""
    tags: list[str] = []
    nodes: set[str] = set()
    i = 0
    while len(tags) < count:
        tag = f"{e.keys.prefix}:{{t{i}}}"
        i += 1
        if isinstance(e.redis, RedisCluster):
            node = e.redis.get_node_from_key(tag).name
            if node in nodes:
                continue
            nodes.add(node)
        tags.append(tag)
    return tags


async def items(e: Any, key: str) -> list[str]:
    return [v.decode() for v in await e.redis.lrange(key, 0, -1)]


def test_run_many_answers_in_call_order_with_errors_as_values(engine) -> None:
    """run_many's replies follow its calls across slots, an error reply in the middle a value."""

    async def run() -> None:
        async with engine() as e:
            a, b, c = spread(e, 3)
            runner: Runner = e.pipeline
            replies = await runner.run_many([
                (SET, [f"{a}:k"], ["1"]), (FAIL, [f"{b}:k"], []), (PUSH, [f"{c}:l"], ["x"]), (GET, [f"{a}:k"], []),
            ])
            assert replies[0] == b"OK" and replies[2] == 1 and replies[3] == b"1"
            assert isinstance(replies[1], ResponseError) and "boom" in str(replies[1])

    asyncio.run(run())


@pytest.mark.parametrize("size", [10, 40])  # within one tick's writes, and a batch of its own
def test_run_many_applies_the_calls_to_one_slot_in_order(engine, size: int) -> None:
    """Scripts and Commands to one slot, mixed, are applied in the order given."""

    async def run() -> None:
        async with engine() as e:
            key = f"{spread(e, 1)[0]}:l"
            await e.pipeline.call(PUSH, [key], ["loaded"])
            replies = await e.pipeline.run_many([(PUSH if i % 3 else RPUSH, [key], [str(i)]) for i in range(size)])
            assert replies == list(range(2, size + 2))
            assert await items(e, key) == ["loaded", *map(str, range(size))]

    asyncio.run(run())


def test_run_chain_across_primaries_waits_for_each_call(engine) -> None:
    """A chain's second call, on another primary, starts only after the first has finished."""

    async def run() -> None:
        async with engine() as e:
            a, b = spread(e, 2)
            replies = await e.pipeline.run_chain([(BUSY_MARK, [f"{a}:t"], [BUSY_S]), (MARK, [f"{b}:t"], [])])
            assert replies == [b"done", b"OK"]
            first, second = int(await e.redis.get(f"{a}:t")), int(await e.redis.get(f"{b}:t"))
            assert second - first >= BUSY_S * 1_000_000, (first, second)

    asyncio.run(run())


def test_run_chain_keeps_its_order_when_the_scripts_are_gone(engine) -> None:
    """After SCRIPT FLUSH a chain's script answered NOSCRIPT is loaded and applied before the
    Command after it, whether the script is in the middle or last."""

    async def run() -> None:
        async with engine() as e:
            a, b = spread(e, 2)
            await e.redis.script_flush()
            middle = await e.pipeline.run_chain([(RPUSH, [f"{a}:l"], ["x"]), (PUSH, [f"{b}:l"], ["s"]), (RPUSH, [f"{b}:l"], ["y"])])
            assert middle == [1, 1, 2]
            assert await items(e, f"{b}:l") == ["s", "y"]
            await e.redis.script_flush()
            last = await e.pipeline.run_chain([(RPUSH, [f"{a}:m"], ["c"]), (PUSH, [f"{a}:m"], ["s"])])
            assert last == [1, 2]
            assert await items(e, f"{a}:m") == ["c", "s"]

    asyncio.run(run())


def test_a_failed_call_stops_the_chain(engine) -> None:
    """The calls after a failed one are not applied and answer ChainBroken naming it."""

    async def run() -> None:
        async with engine() as e:
            a, b, c = spread(e, 3)
            replies = await e.pipeline.run_chain([
                (SET, [f"{a}:k"], ["1"]), (FAIL, [f"{b}:k"], []), (SET, [f"{c}:k"], ["3"]), (PUSH, [f"{a}:l"], ["4"]),
            ])
            assert replies[0] == b"OK" and isinstance(replies[1], ResponseError)
            assert all(isinstance(r, ChainBroken) and r.failed == 1 and r.cause is replies[1] for r in replies[2:])
            assert await e.redis.exists(f"{c}:k", f"{a}:l") == 0

    asyncio.run(run())


def test_a_refused_command_applies_none_of_its_transaction(engine) -> None:
    """Commands then a script to one slot go as one transaction: a Command the server refuses
    (here a wrong arity) applies none of them, the others answering ChainBroken."""

    async def run() -> None:
        async with engine() as e:
            a = spread(e, 1)[0]
            replies = await e.pipeline.run_chain([(ZADD, [f"{a}:z"], ["NX", 1, "m"]), (ZADD, [f"{a}:z"], []), (PUSH, [f"{a}:l"], ["x"])])
            assert isinstance(replies[1], ResponseError) and not isinstance(replies[1], ChainBroken)
            assert [type(r) for r in (replies[0], replies[2])] == [ChainBroken, ChainBroken]
            assert replies[0].failed == replies[2].failed == 1
            assert await e.redis.exists(f"{a}:z", f"{a}:l") == 0

    asyncio.run(run())


def test_a_command_failing_only_when_run_does_not_stop_its_transaction(engine) -> None:
    """The one exception the promise states: in a transaction, a Command that fails when run (a
    wrong type) cannot stop the call after it, whose reply is then its own."""

    async def run() -> None:
        async with engine() as e:
            a = spread(e, 1)[0]
            await e.pipeline.call(SET, [f"{a}:z"], ["not a sorted set"])
            replies = await e.pipeline.run_chain([(ZADD, [f"{a}:z"], ["NX", 1, "m"]), (PUSH, [f"{a}:l"], ["x"])])
            assert isinstance(replies[0], ResponseError) and str(replies[0]).startswith("WRONGTYPE")
            assert replies[1] == 1

    asyncio.run(run())


def test_a_command_goes_through_call_run_many_and_run_chain(engine) -> None:
    """A plain command is sent as itself: its keys, then its args, through every way to call."""

    async def run() -> None:
        async with engine() as e:
            a, b = spread(e, 2)
            assert await e.pipeline.call(ZADD, [f"{a}:z"], ["NX", 5, "job"]) == 1
            assert await e.pipeline.call(ZADD, [f"{a}:z"], ["NX", 9, "job"]) == 0  # NX: keeps its time
            assert await e.pipeline.run_many([(ZADD, [f"{b}:z"], ["NX", 7, "job"]), (Command("ZSCORE"), [f"{a}:z"], ["job"])]) == [1, b"5"]
            chained = await e.pipeline.run_chain([(ZADD, [f"{a}:z"], ["NX", 6, "other"]), (ZADD, [f"{b}:z"], ["NX", 8, "other"])])
            assert chained == [1, 1]
            assert await e.redis.zrange(f"{b}:z", 0, -1, withscores=True) == [(b"job", 7.0), (b"other", 8.0)]

    asyncio.run(run())


class Writes:
    """Counts the writes of an ``AutoPipeline``'s connection (how many commands each carried),
    by wrapping its ``send``: what reaches the server is untouched."""

    def __init__(self, pipe: AutoPipeline) -> None:
        conn = pipe._conn
        assert conn is not None, "make a call first: the connection opens on the first"
        self.commands: list[int] = []
        send = conn.send

        def counted(payload: bytes, futures: Any) -> None:
            self.commands.append(len(futures))
            send(payload, futures)

        conn.send = counted  # type: ignore[method-assign]


def test_an_award_that_schedules_its_lots_job_is_one_write_on_one_server(engine, compile_toml) -> None:
    """An award whose lot needs its expiry job leaves both the job and the lot; on one server
    the ZADD and the award go in one write (MULTI, ZADD, EVALSHA, EXEC), as any Command-then-script chain."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            expiry = local_midnight_after(e.now_ms, 3)
            a = spread(e, 1)[0]
            await e.pipeline.call(PUSH, [f"{a}:l"], ["warm"])  # the connection open, the script loaded
            writes = Writes(e.pipeline) if isinstance(e.pipeline, AutoPipeline) else None
            await e.apply("p-1", "m-1", "pay", {"cents": 100})
            assert await e.redis.zscore(jobs_key(e.keys, shard_of("m-1")), expire_job_id("m-1", expiry)) == expiry
            assert await lots_of(e, "m-1") == {expiry: 100}
            if writes is not None:
                assert writes.commands == [4]
                await e.pipeline.run_chain([(RPUSH, [f"{a}:l"], ["c"]), (PUSH, [f"{a}:l"], ["s"])])
                assert writes.commands == [4, 4]

    asyncio.run(run())
