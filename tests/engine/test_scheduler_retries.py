"""Bounded retries on the real server: a job that keeps failing goes to its shard's dead list after
its most attempts (the scheduler's, or its kind's from the programme), each retry's delay is
exponential with jitter inside its bounds, and ``rekindle verify`` reports what was given up."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from engine.clock import ManualClock
from engine.jobs import HANDLERS, SHARDS, DeadJob, Job, dead_key, jobs_key, shard_of, tries_key
from engine.scheduler import Scheduler
from engine.verify import verify_all
from tests.engine.test_scheduler import jobs, scheduler_of


def boom(job: Job, program: Any, now_ms: int) -> None:
    raise RuntimeError("poison")


async def dead(e: Any) -> dict[str, int]:
    """Every job of every shard's dead list: id -> when it was given up."""
    out: dict[str, int] = {}
    for shard in range(SHARDS):
        for job, score in await e.redis.zrange(dead_key(e.keys, shard), 0, -1, withscores=True):
            out[job.decode()] = int(score)
    return out


def test_a_poison_job_goes_to_the_dead_list_after_its_most_attempts(engine, caplog) -> None:
    """A handler that always raises runs max_tries times, each retry after its backoff, then the
    job leaves its set for the dead list (attempts kept), logged; nothing runs it again, and
    verify names it until an operator clears it."""

    async def run() -> None:
        async with engine() as e:
            clock = ManualClock(e.now_ms)
            job = "rk:boom:m-1:1"
            async with scheduler_of(e, clock, {**HANDLERS, "boom": boom}, retry_first_ms=10, retry_longest_ms=40,
                                    max_tries=4) as scheduler:
                await scheduler.schedule([(job, e.now_ms)])
                for attempt in range(1, 4):
                    report = await scheduler.tick()
                    assert (report.ran, report.failed, report.dead) == (0, 1, 0), attempt
                    assert job in await jobs(e)
                    assert int(await e.redis.hget(tries_key(e.keys, shard_of("m-1")), job)) == attempt
                    clock.advance(40)  # past the longest delay: due again
                report = await scheduler.tick()
                assert (report.ran, report.failed, report.dead) == (0, 0, 1)
                assert await jobs(e) == {}
                assert await dead(e) == {job: clock.now_ms()}
                assert int(await e.redis.hget(tries_key(e.keys, shard_of("m-1")), job)) == 4
                clock.advance(3_600_000)
                report = await scheduler.tick()
                assert (report.ran, report.failed, report.dead) == (0, 0, 0)
            assert any(job in r.message and "given up after 4 attempts" in r.message and r.levelname == "ERROR"
                       for r in caplog.records)
            report = await verify_all(e.redis, e.keys)
            [given_up] = [c for c in report.checks if c.name == "no job given up"]
            assert len(given_up.details) == 1 and job in given_up.details[0]

    asyncio.run(run())


def test_a_kind_takes_its_most_attempts_from_the_programme(engine) -> None:
    """``tries_by_kind`` reads the programme of each tick: its kind's jobs die after 2 attempts while
    another failing kind keeps the scheduler's own bound; a job of no known shape is bounded too."""

    async def run() -> None:
        async with engine() as e:
            clock = ManualClock(e.now_ms)
            seen: list[Any] = []

            def two(program: Any) -> int:
                seen.append(program)
                return 2

            handlers = {**HANDLERS, "boom": boom, "bang": boom}
            async with scheduler_of(e, clock, handlers, retry_first_ms=10, retry_longest_ms=10, max_tries=3,
                                    tries_by_kind={"bang": two}) as scheduler:
                await scheduler.schedule([("rk:boom:m-1:1", e.now_ms), ("rk:bang:m-2:1", e.now_ms)])
                await e.redis.zadd(jobs_key(e.keys, 0), {"garbage": e.now_ms})
                assert (await scheduler.tick()).failed == 3
                clock.advance(10)
                report = await scheduler.tick()
                assert (report.failed, report.dead) == (2, 1)
                assert set(await dead(e)) == {"rk:bang:m-2:1"}
                clock.advance(10)
                report = await scheduler.tick()
                assert (report.failed, report.dead) == (0, 2)
                assert set(await dead(e)) == {"rk:bang:m-2:1", "rk:boom:m-1:1", "garbage"}
                assert await jobs(e) == {}
            assert seen and all(p is e.program for p in seen)

    asyncio.run(run())


def test_retry_delays_are_exponential_with_jitter_inside_their_bounds(engine) -> None:
    """60 jobs failing together come back spread out: the n-th retry of each lies within
    [(1 - jitter) * d, d] for d = first * 2^(n-1) capped at the longest, and not all at once."""

    async def run() -> None:
        async with engine() as e:
            clock = ManualClock(e.now_ms)
            members = [f"m-{i}" for i in range(60)]
            ids = [f"rk:boom:{m}:1" for m in members]
            async with scheduler_of(e, clock, {**HANDLERS, "boom": boom}, retry_first_ms=1_000,
                                    retry_longest_ms=3_000, jitter=0.5) as scheduler:
                await scheduler.schedule([(i, e.now_ms) for i in ids])
                for d in (1_000, 2_000, 3_000, 3_000):  # 4 s is cut to the longest, 3 s
                    now = clock.now_ms()
                    assert (await scheduler.run_due()) == 0
                    due = await jobs(e)
                    assert set(due) == set(ids)
                    delays = [due[i] - now for i in ids]
                    assert all(d // 2 <= x <= d for x in delays), (d, sorted(delays))
                    assert len(set(delays)) > 10, "jobs that failed together must not all come back together"
                    clock.set(max(due.values()))

    asyncio.run(run())


def test_full_jitter_and_no_jitter(engine) -> None:
    """jitter=1 draws a delay anywhere in [0, d]; jitter=0 is the plain exponential delay; a
    jitter outside [0, 1] or a bound below 1 is refused when the scheduler is made."""

    async def run() -> None:
        async with engine() as e:
            clock = ManualClock(e.now_ms)
            ids = [f"rk:boom:m-{i}:1" for i in range(40)]
            async with scheduler_of(e, clock, {**HANDLERS, "boom": boom}, retry_first_ms=8_000, jitter=1.0) as scheduler:
                await scheduler.schedule([(i, e.now_ms) for i in ids])
                await scheduler.run_due()
                delays = [due - e.now_ms for due in (await jobs(e)).values()]
                assert all(0 <= x <= 8_000 for x in delays) and min(delays) < 4_000 < max(delays)
            async with scheduler_of(e, clock, {**HANDLERS, "boom": boom}, retry_first_ms=8_000, jitter=0) as scheduler:
                clock.set(e.now_ms + 8_000)
                await scheduler.run_due()
                assert set((await jobs(e)).values()) == {e.now_ms + 8_000 + 16_000}
        for bad in ({"jitter": 1.5}, {"jitter": -0.1}, {"max_tries": 0}):
            with pytest.raises(ValueError):
                Scheduler(None, None, None, None, ManualClock(0), lambda: None, **bad)  # type: ignore[arg-type]

    asyncio.run(run())


def test_a_task_that_says_dead_goes_there_at_once_with_its_attempt_counted(engine, caplog) -> None:
    """``DeadJob`` from a task: the dead list at its first attempt, whatever the bound, attempts 1."""

    async def run() -> None:
        async with engine() as e:
            clock = ManualClock(e.now_ms)

            async def hopeless(job: Job, program: Any, now_ms: int) -> None:
                raise DeadJob("retrying could do harm")

            caplog.set_level(logging.ERROR, "rekindle.scheduler")
            async with scheduler_of(e, clock, tasks={"hopeless": hopeless}) as scheduler:
                await scheduler.schedule([("rk:hopeless:m-1:1", e.now_ms)])
                report = await scheduler.tick()
                assert (report.ran, report.failed, report.dead) == (0, 0, 1)
            assert await dead(e) == {"rk:hopeless:m-1:1": e.now_ms}
            assert int(await e.redis.hget(tries_key(e.keys, shard_of("m-1")), "rk:hopeless:m-1:1")) == 1

    asyncio.run(run())
