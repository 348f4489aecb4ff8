"""``rekindle backfill`` (engine/backfill.py): lifecycle jobs for members who predate them."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.backfill import backfill
from engine.clock import DAY_MS, ManualClock
from engine.jobs import SHARDS, dormancy_job_id, jobs_key, shard_of, tier_job_id
from engine.scheduler import Scheduler

PROGRAM = """
[program]
name = "backfill"
timezone = "Asia/Shanghai"

[events.purchase]
fields.amount = { type = "int", min = 1 }

[rules.buy]
event = "purchase"
grant = "xp"
per = { field = "amount", every = 1, amount = 1 }

[[tiers]]
id = "base"
name = "Base"
xp = 0

[[tiers]]
id = "silver"
name = "Silver"
xp = 100
"""

DORMANCY = """
[care.dormancy]
after_days = 30
title = "We miss you"
return_event = "purchase"
wake_up = { title = "Welcome back", rewards = { points = 5 } }
"""

YEAR = '\n[tier_policy]\nwindow = "year"\n'


def test_members_from_before_the_lifecycle_get_their_jobs_once(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=compile_toml(PROGRAM)) as e:
            now = e.now_ms
            await e.apply("o-1", "silver", "purchase", {"amount": 150})  # before dormancy and the tier policy
            await e.apply("o-2", "base", "purchase", {"amount": 10}, now_ms=now + DAY_MS)
            await e.redis.hdel(e.keys.member("gone").profile, "la")
            await e.redis.hset(e.keys.member("gone").profile, "xp", 0)  # active before `la` was kept
            assert [await e.redis.zcard(jobs_key(e.keys, n)) for n in range(SHARDS)] == [0] * SHARDS  # no job yet

            e.program = compile_toml(PROGRAM + DORMANCY + YEAR)
            later = now + 2 * DAY_MS
            report = await backfill(e.redis, e.keys, e.program, later)
            assert (report.members, report.dormancy_jobs, report.tier_reviews) == (3, 3, 1)

            def due(member: str, job: str) -> Any:
                return e.redis.zscore(jobs_key(e.keys, shard_of(member)), job)

            assert await due("silver", dormancy_job_id("silver")) == now + 30 * DAY_MS  # last active + 30 days
            assert await due("base", dormancy_job_id("base")) == now + 31 * DAY_MS
            assert await due("gone", dormancy_job_id("gone")) == later + 30 * DAY_MS  # no `la`: the days from now
            assert await due("silver", tier_job_id("silver", later)) == later

            scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(later), lambda: e.program)
            await scheduler.run_due()
            await scheduler.stop()
            assert (await e.profile("silver"))["te"] == str(e.program.tier_rules.kept_until(later))  # type: ignore[union-attr]
            again = await backfill(e.redis, e.keys, e.program, later + DAY_MS)
            assert (again.dormancy_jobs, again.tier_reviews) == (0, 0)
            # An expiry whose review was lost (a schedule that failed after the operation) gets it.
            expiry = int((await e.profile("silver"))["te"])
            await e.redis.zrem(jobs_key(e.keys, shard_of("silver")), tier_job_id("silver", expiry))
            repaired = await backfill(e.redis, e.keys, e.program, later + DAY_MS)
            assert repaired.tier_reviews == 1 and await due("silver", tier_job_id("silver", expiry)) == expiry

    asyncio.run(run())
