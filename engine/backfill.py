"""Lifecycle jobs for members who predate them: ``rekindle backfill``.

The lifecycle schedules per member, driven by what happens to the member: a dormancy job with
their first activity a process applies, a tier review with the change that sets a tier's expiry.
A member who was last active before dormancy was in the programme, and never comes back, has no
dormancy job, so is never marked dormant nor offered the wake-up; a member holding a tier from
before a ``[tier_policy]`` window has no expiry until their next operation. This walks every
member once (SCAN: an offline tool, as ``rekindle verify`` is, never a hot path) and schedules
what is missing, ``ZADD NX`` (a job already waiting keeps its time):

- the dormancy job at the member's last activity (``la``) plus the programme's days; when the
  profile has no ``la`` (the member was last active before ``la`` was kept, so when is unknown),
  the days from now: a member is never marked dormant by the upgrade itself;
- under a reviewed tier policy, for a member above the first tier with no expiry (``te``), a
  review now, which holds the tier from then (member.lua's review of a tier with no expiry); and
  for a member with an expiry, its review at the expiry (an operation that set it and could not
  schedule its review leaves one missing: ``OperationStore`` logs it and says to run this).

Run twice, it schedules nothing more: the dormancy job's id is one per member, and a second
review finds the expiry the first set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from engine.config import CompiledProgram
from engine.ids import MemberId
from engine.jobs import dormancy_job_id, jobs_key, shard_of, tier_job_id
from engine.keys import Keys
from engine.ledger import members_of

BATCH = 500


@dataclass(frozen=True, slots=True)
class BackfillReport:
    members: int
    dormancy_jobs: int  # scheduled now (not already waiting)
    tier_reviews: int


async def backfill(redis: Redis, keys: Keys, program: CompiledProgram, now_ms: int,
                   progress: Callable[[int], None] | None = None) -> BackfillReport:
    rules = program.tier_rules
    reviews = rules is not None and rules.reviewed
    members = dormancy = tiers = 0
    batch: list[MemberId] = []

    async def flush() -> None:
        nonlocal dormancy, tiers
        pipe = redis.pipeline(transaction=False)
        for member in batch:
            pipe.hmget(keys.member(member).profile, "la", "dm", "tier", "te")
        facts = await pipe.execute()
        pipe = redis.pipeline(transaction=False)
        kinds: list[str] = []
        for member, (la, dm, tier, te) in zip(batch, facts):
            key = jobs_key(keys, shard_of(member))
            if program.dormancy_ms and dm is None:
                due = (int(la) if la is not None else now_ms) + program.dormancy_ms
                pipe.zadd(key, {dormancy_job_id(member): max(due, now_ms)}, nx=True)
                kinds.append("d")
            if reviews and tier is not None and tier.decode() != program.tiers[0].id:
                expiry = int(te) if te is not None else now_ms
                pipe.zadd(key, {tier_job_id(member, expiry): expiry}, nx=True)
                kinds.append("t")
        for kind, added in zip(kinds, await pipe.execute()):
            if kind == "d":
                dormancy += int(added)
            else:
                tiers += int(added)
        batch.clear()

    async for member in members_of(redis, keys):
        members += 1
        batch.append(member)
        if len(batch) >= BATCH:
            await flush()
            if progress is not None:
                progress(members)
    if batch:
        await flush()
    return BackfillReport(members, dormancy, tiers)
