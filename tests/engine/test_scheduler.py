"""The scheduler on the real server: jobs in sharded sets, leases, settle-if-unchanged, backoff, and
points expiry run from it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import redis

from engine.clock import ManualClock
from engine.jobs import HANDLERS, SHARDS, CACHE_TRUST_MS, Handler, Job, expire_job_id, jobs_key, lease_key, shard_of, tries_key
from engine.ledger import verify
from engine.scheduler import Scheduler
from tests.engine.test_operations import local_midnight_after, lots_of, lots_program, spend

LEASE_GONE_TIMEOUT_S = 10.0


@asynccontextmanager
async def scheduler_of(e: Any, clock: ManualClock, handlers: Mapping[str, Handler] = HANDLERS, **kwargs: Any) -> AsyncIterator[Scheduler]:
    """A scheduler on the test's engine (its runner, keys, store), stopped (leases given up) after."""
    scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, clock, lambda: e.program, handlers=handlers, **kwargs)
    try:
        yield scheduler
    finally:
        await scheduler.stop()


async def jobs(e: Any) -> dict[str, int]:
    """Every waiting job of every shard: id -> due ms."""
    out: dict[str, int] = {}
    for shard in range(SHARDS):
        for job, score in await e.redis.zrange(jobs_key(e.keys, shard), 0, -1, withscores=True):
            out[job.decode()] = int(score)
    return out


async def ledger_kinds(e: Any, member: str) -> list[bytes]:
    return [f[b"k"] for _, f in await e.redis.xrange(e.keys.member(member).ledger)]


async def feed_effects(e: Any, member: str) -> list[tuple[str, dict[str, Any]]]:
    entries = await e.redis.xrange(e.keys.member(member).feed)
    return [(kind, data) for _, f in entries for kind, data in msgpack.unpackb(f[b"d"], raw=False)]


def test_granting_points_schedules_the_lots_expiry_job(engine, compile_toml) -> None:
    """A grant with an expiry leaves job rk:expire:<member>:<expiry> due at the expiry, in the
    member's shard, once however many grants share the lot; a spend schedules nothing."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            expiry = local_midnight_after(e.now_ms, 3)
            await e.apply("p-1", "m-1", "pay", {"cents": 100})
            await e.apply("p-2", "m-1", "pay", {"cents": 50})
            await spend(e, "m-1", "s-1", 10)
            assert await jobs(e) == {f"rk:expire:m-1:{expiry}": expiry}
            assert await e.redis.zscore(jobs_key(e.keys, shard_of("m-1")), f"rk:expire:m-1:{expiry}") == expiry

    asyncio.run(run())


def test_points_expire_from_the_scheduler_once(engine, compile_toml) -> None:
    """Past the lot's expiry one tick writes it off (ledger kind x, feed points_expired, balance ==
    lots == ledger); before it nothing runs, and a second tick does nothing."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            clock = ManualClock(e.now_ms)
            expiry = local_midnight_after(e.now_ms, 3)
            await e.apply("p-1", "m-1", "pay", {"cents": 100})
            await spend(e, "m-1", "s-1", 30)
            async with scheduler_of(e, clock) as scheduler:
                assert (await scheduler.tick()).ran == 0
                clock.set(expiry - 1)
                assert (await scheduler.tick()).ran == 0
                assert await e.balance("m-1") == 70
                clock.set(expiry + 5_000)
                report = await scheduler.tick()
                assert (report.ran, report.failed, report.shards) == (1, 0, SHARDS)
                assert await e.balance("m-1") == 0
                assert await lots_of(e, "m-1") == {}
                assert await ledger_kinds(e, "m-1") == [b"g", b"s", b"x"]
                assert (await e.ledger("m-1"))[-1] == (-70, 0)
                assert ("points_expired", {"amount": 70, "balance": 0, "expired_at_ms": expiry}) in await feed_effects(e, "m-1")
                assert (await verify(e.redis, e.keys)).ok
                assert await jobs(e) == {}
                assert (await scheduler.tick()).ran == 0
                assert await ledger_kinds(e, "m-1") == [b"g", b"s", b"x"]

    asyncio.run(run())


def test_a_job_runs_once_when_two_schedulers_tick_concurrently(engine, compile_toml) -> None:
    """Two schedulers ticking at once over 60 members' expiry jobs run each job exactly once."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            clock = ManualClock(e.now_ms)
            members = [f"m-{i}" for i in range(60)]
            await asyncio.gather(*(e.apply(f"p-{m}", m, "pay", {"cents": 10}) for m in members))
            assert len({shard_of(m) for m in members}) > 1
            clock.set(local_midnight_after(e.now_ms, 3))
            async with scheduler_of(e, clock) as a, scheduler_of(e, clock) as b:
                first, second = await asyncio.gather(a.tick(), b.tick())
                assert first.ran + second.ran == len(members)
                assert first.shards + second.shards == SHARDS
            for m in members:
                assert await ledger_kinds(e, m) == [b"g", b"x"]
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_a_job_run_twice_applies_once(engine, compile_toml) -> None:
    """A job that runs again (its holder lost the lease after applying, before settling) is a
    duplicate of its own operation: the ledger does not change."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            clock = ManualClock(e.now_ms)
            expiry = local_midnight_after(e.now_ms, 3)
            await e.apply("p-1", "m-1", "pay", {"cents": 100})
            clock.set(expiry)
            async with scheduler_of(e, clock) as a:
                assert (await a.tick()).ran == 1
            ledger = await e.ledger("m-1")
            async with scheduler_of(e, clock) as b:
                assert await b.schedule([(expire_job_id("m-1", expiry), expiry)]) == 1
                assert (await b.tick()).ran == 1
            assert await e.ledger("m-1") == ledger
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_a_lease_excludes_a_second_worker_and_expires_when_its_holder_dies(engine, compile_toml) -> None:
    """While A holds the shards B runs nothing; A stops ticking without giving them up (it died),
    its leases run out by themselves and B takes the shards and their work over."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            clock = ManualClock(e.now_ms)
            a = Scheduler(e.pipeline, e.keys, e.scripts, e.store, clock, lambda: e.program, lease_ms=300)
            assert (await a.tick()).shards == SHARDS
            await e.apply("p-1", "m-1", "pay", {"cents": 100})
            clock.set(local_midnight_after(e.now_ms, 3))
            async with scheduler_of(e, clock) as b:
                report = await b.tick()
                assert (report.shards, report.ran) == (0, 0)
                assert len(await jobs(e)) == 1
                leases = [lease_key(e.keys, s) for s in range(SHARDS)]
                assert 0 < await e.redis.pttl(leases[0]) <= 300
                deadline = time.monotonic() + LEASE_GONE_TIMEOUT_S
                while await e.redis.exists(*leases):  # A is gone: nothing renews its leases
                    assert time.monotonic() < deadline, "A's leases never expired"
                    await asyncio.sleep(0.05)
                report = await b.tick()
                assert (report.shards, report.ran) == (SHARDS, 1)
                assert await e.balance("m-1") == 0

    asyncio.run(run())


def test_stopping_gives_the_leases_up_at_once(engine) -> None:
    """A scheduler that stops releases its shards: the next worker's first tick holds them all."""

    async def run() -> None:
        async with engine() as e:
            clock = ManualClock(e.now_ms)
            async with scheduler_of(e, clock) as a:
                assert (await a.tick()).shards == SHARDS
            async with scheduler_of(e, clock) as b:
                assert (await b.tick()).shards == SHARDS

    asyncio.run(run())


def test_a_job_rescheduled_during_its_run_is_kept(engine, sync_redis: redis.Redis) -> None:
    """A job moved to a later time while it runs is not removed when its run settles."""

    async def run() -> None:
        async with engine() as e:
            clock = ManualClock(e.now_ms)
            later = e.now_ms + 86_400_000
            job = "wakeup:m-1:x"
            key = jobs_key(e.keys, shard_of("m-1"))

            def move_me(j: Job, program: Any, now_ms: int) -> None:
                sync_redis.zadd(key, {j.id: later})  # another operation pushing the job later
                return None

            async with scheduler_of(e, clock, {**HANDLERS, "wakeup": move_me}) as scheduler:
                await scheduler.schedule([(job, e.now_ms)])
                assert (await scheduler.tick()).ran == 1
                assert await jobs(e) == {job: later}
                assert (await scheduler.tick()).ran == 0
                clock.set(later)  # the handler now sets the time the job already has: done
                assert (await scheduler.tick()).ran == 1
                assert await jobs(e) == {}

    asyncio.run(run())


def test_unknown_and_failing_jobs_wait_with_backoff_and_block_nothing(engine, compile_toml) -> None:
    """An unknown kind, a handler that raises and an id of no known shape stay, due again after
    1 s, 2 s, then at most the longest delay (no jitter here: test_scheduler_retries.py has it);
    the expiry job beside them runs at once."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            clock = ManualClock(e.now_ms)

            def boom(job: Job, program: Any, now_ms: int) -> None:
                raise RuntimeError("poison")

            await e.apply("p-1", "m-1", "pay", {"cents": 100})
            expiry = local_midnight_after(e.now_ms, 3)
            clock.set(expiry)
            handlers = {**HANDLERS, "boom": boom}
            async with scheduler_of(e, clock, handlers, retry_first_ms=1_000, retry_longest_ms=2_500,
                                    jitter=0) as scheduler:
                await scheduler.schedule([("nope:m-2:1", expiry - 10), ("boom:m-3:1", expiry - 10)])
                await e.redis.zadd(jobs_key(e.keys, 0), {"garbage": expiry - 10})
                report = await scheduler.tick()
                assert (report.ran, report.failed) == (1, 3)
                assert await e.balance("m-1") == 0
                stuck = {"nope:m-2:1", "boom:m-3:1", "garbage"}
                assert await jobs(e) == dict.fromkeys(stuck, expiry + 1_000)
                assert (await scheduler.tick()).failed == 0  # not due again yet: no busy loop
                clock.set(expiry + 1_000)
                assert (await scheduler.tick()).failed == 3
                assert await jobs(e) == dict.fromkeys(stuck, expiry + 3_000)
                clock.set(expiry + 3_000)
                assert (await scheduler.tick()).failed == 3
                assert await jobs(e) == dict.fromkeys(stuck, expiry + 5_500)  # 4 s, cut to the longest delay
                tries = await e.redis.hget(tries_key(e.keys, shard_of("m-3")), "boom:m-3:1")
                assert int(tries) == 3

    asyncio.run(run())


def test_a_remembered_job_is_scheduled_again_near_its_expiry(engine, compile_toml) -> None:
    """The store skips scheduling a job it already scheduled while the expiry is far ahead, and
    schedules it again within a day of it (another host's clock, a late event)."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            expiry = local_midnight_after(e.now_ms, 3)
            job = expire_job_id("m-1", expiry)
            await e.apply("p-1", "m-1", "pay", {"cents": 100})
            await e.redis.delete(jobs_key(e.keys, shard_of("m-1")))  # gone behind the store's back
            await e.apply("p-2", "m-1", "pay", {"cents": 100})
            assert await jobs(e) == {}  # remembered: no call on the hot path
            near = expiry - CACHE_TRUST_MS
            await e.apply("p-3", "m-1", "pay", {"cents": 100}, at=e.now_ms, now_ms=near)  # the same lot
            assert await jobs(e) == {job: expiry}

    asyncio.run(run())


def test_the_scheduler_survives_script_flush(engine, compile_toml) -> None:
    """After SCRIPT FLUSH the scheduler's and the store's scripts load again and expiry still runs."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            clock = ManualClock(e.now_ms)
            await e.redis.script_flush()
            await e.apply("p-1", "m-1", "pay", {"cents": 100})
            await e.redis.script_flush()
            clock.set(local_midnight_after(e.now_ms, 3))
            async with scheduler_of(e, clock) as scheduler:
                assert (await scheduler.tick()).ran == 1
            assert await ledger_kinds(e, "m-1") == [b"g", b"x"]

    asyncio.run(run())


def test_a_client_id_cannot_take_a_jobs_operation_id() -> None:
    """A spend, an event or a redemption posted under a job's id (``rk:expire:<member>:<ms>``)
    is refused at parsing, naming the field: the engine's namespace is its own."""
    import pytest

    from engine.errors import InvalidInput
    from engine.operations import parse_spend

    job = expire_job_id("m-1", 1_798_732_800_000)
    assert job.startswith("rk:")
    with pytest.raises(InvalidInput) as caught:
        parse_spend({"id": job, "amount": 10}, "m-1", 0)
    assert caught.value.field == "id" and "reserved" in str(caught.value)
    parse_spend({"id": "expire:m-1:1798732800000", "amount": 10}, "m-1", 0)  # outside it: a client's to use


def test_a_job_whose_id_was_taken_fails_loudly_and_stays(engine, compile_toml, caplog) -> None:
    """A job whose operation id was applied with another body (only a bug can do it now) is not
    dropped: it fails, stays in its set for a retry and logs an error each time."""
    from engine.ids import EventId
    from engine.operations import Operation, fingerprint, member_plan

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            clock = ManualClock(e.now_ms)
            expiry = local_midnight_after(e.now_ms, 3)
            job = expire_job_id("m-1", expiry)
            await e.apply("p-1", "m-1", "pay", {"cents": 100})
            squatter = Operation(EventId(job), "m-1", e.now_ms, fingerprint("not", "the job"))
            await e.store.apply(member_plan(e.program, squatter, e.now_ms, debits=([5, "squat"],)), e.program)
            clock.set(expiry)
            async with scheduler_of(e, clock) as scheduler:
                report = await scheduler.tick()
            assert (report.ran, report.failed) == (0, 1)
            assert job in await jobs(e)
            assert any(job in r.message and "another body" in r.message and r.levelname == "ERROR" for r in caplog.records)

    asyncio.run(run())


def test_a_job_scheduled_before_the_prefix_applies_under_the_prefixed_id(engine, compile_toml) -> None:
    """A job a build without the prefix left waiting (``expire:<member>:<ms>``) still runs, under
    ``rk:expire:...``, so a client operation that used the bare id cannot pre-empt it."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            clock = ManualClock(e.now_ms)
            expiry = local_midnight_after(e.now_ms, 3)
            await e.apply("p-1", "m-1", "pay", {"cents": 100})
            await e.redis.delete(jobs_key(e.keys, shard_of("m-1")))
            legacy = f"expire:m-1:{expiry}"
            await spend(e, "m-1", legacy, 10)  # a client's id, the same text as the old job's
            await e.redis.zadd(jobs_key(e.keys, shard_of("m-1")), {legacy: expiry})
            clock.set(expiry)
            async with scheduler_of(e, clock) as scheduler:
                assert (await scheduler.tick()).ran == 1
            assert await e.balance("m-1") == 0
            assert await ledger_kinds(e, "m-1") == [b"g", b"s", b"x"]
            assert await jobs(e) == {}

    asyncio.run(run())
