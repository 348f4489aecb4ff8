"""Valkey CPU per member-script call, by path: what one primary's ceiling in awards/s comes from.

``INFO commandstats`` keeps the server time of each command; after ``CONFIG RESETSTAT`` on a
database of its own, a run of one kind of call through the real ``OperationStore`` makes that
figure the server time of that path alone (the service's Python is not in it). Paths:

- a typical purchase under the example programme (the figure the design holds at <= 60 us);
- the same event again: a duplicate, which replays the original award from the feed;
- a purchase under a programme at every size limit the validator allows (tiers, coupons per
  bundle, quests matching one event), which shows that no valid programme can make an award
  cost many times the typical one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import redis as redis_sync
from redis.asyncio import Redis

from engine import config
from engine.awards import plan_award
from engine.operations import MemberPlan
from engine.config import CompiledProgram, compile_program, parse_program
from engine.events import parse_event
from engine.keys import Keys
from engine.pipelining import AutoPipeline
from engine.scripts import Scripts
from engine.store import OpStatus, OperationStore


@dataclass(frozen=True)
class ServerCost:
    award_us: float
    duplicate_us: float
    at_limits_us: float
    limits: str  # what "at its limits" meant in this run


def limits_program() -> CompiledProgram:
    """A programme at the validator's limits: every tier with the most coupons a bundle holds,
    and as many rules and quests on one event type as allowed (so one award runs them all)."""
    tiers, coupons = config.MAX_TIERS, config.MAX_COUPONS_PER_REWARD
    rules, quests = config.MAX_RULES_PER_EVENT, config.MAX_QUESTS_PER_EVENT
    name = "x" * 40  # long names cost bytes in every table the script unpacks
    lines = [
        '[program]\nname = "at the limits"\ntimezone = "Asia/Shanghai"\n',
        '[events.pay]\nfields.cents = { type = "int", min = 1 }\n',
    ]
    for r in range(rules):  # half XP, half points, every one with a daily cap (the costlier kind)
        grant = "xp" if r % 2 else "points"
        lines.append(
            f'[rules.r{r}{name}]\nevent = "pay"\ngrant = "{grant}"\nper = {{ field = "cents", every = 100, amount = 1 }}\n'
            "daily_cap = 1000000\n"
        )
    for c in range(coupons):
        lines.append(f'[catalog.c{c}{name}]\ntitle = "c"\nvalue_cents = 100\n')
    bundle = ", ".join(f'"c{c}{name}"' for c in range(coupons))
    for t in range(tiers):
        lines.append(
            f'[[tiers]]\nid = "t{t}{name}"\nname = "Tier {t}"\nxp = {t * 1_000_000}\npoints_multiplier = 1.5\n'
            f"rewards = {{ points = 10, coupons = [{bundle}] }}\n"
        )
    for q in range(quests):
        lines.append(f'[quests.q{q}{name}]\ntitle = "q"\nkind = "daily"\nevent = "pay"\ntarget = 1000000\n')
    source = "\n".join(lines).encode()
    return compile_program(parse_program(source, "limits.toml"), source)


def _plans(program: CompiledProgram, event_type: str, data: dict, members: int, run_id: str, now_ms: int) -> list[MemberPlan]:
    raws = [{"id": f"{run_id}-{m}", "member": f"m{m}", "type": event_type, "data": data} for m in range(members)]
    return [plan_award(program, parse_event(raw, program, now_ms), now_ms) for raw in raws]


async def _apply(url: str, db: int, prefix: str, program: CompiledProgram, plans: Sequence[MemberPlan], expect: OpStatus) -> float:
    """Apply ``plans`` (1,000 a pipeline) after a stats reset; the server's us per operation."""
    client = Redis.from_url(url, db=db)
    try:
        scripts = Scripts()
        await scripts.load(client)
        store = OperationStore(AutoPipeline(client), Keys(prefix), scripts)
        await client.config_resetstat()
        for i in range(0, len(plans), 1000):
            results = await store.apply_many(plans[i : i + 1000], program)
            bad = [r for r in results if isinstance(r, Exception) or r.status is not expect]
            if bad:
                raise RuntimeError(f"server cost: {len(bad)} calls not {expect.value}, e.g. {bad[0]!r}")
        stats = await client.info("commandstats")
        # Per operation, not per call: an award may be preceded by the call that schedules its
        # points' expiry (engine/jobs.py), and that server time is the award's too.
        return float(stats["cmdstat_evalsha"]["usec"]) / len(plans)
    finally:
        await client.aclose()


def measure(url: str, db: int, program: CompiledProgram, run_id: str, now_ms: int, members: int = 5000) -> ServerCost:
    """Each path on ``members`` members of their own, in database ``db`` (emptied first)."""
    redis_sync.Redis.from_url(url, db=db).flushdb()
    purchases = _plans(program, "purchase", {"amount": 12_900}, members, run_id, now_ms)
    award = asyncio.run(_apply(url, db, f"sc{run_id}", program, purchases, OpStatus.APPLIED))
    duplicate = asyncio.run(_apply(url, db, f"sc{run_id}", program, purchases, OpStatus.DUPLICATE))
    limits = limits_program()
    at_limits_plans = _plans(limits, "pay", {"cents": 12_900}, members, run_id, now_ms)
    at_limits = asyncio.run(_apply(url, db, f"sl{run_id}", limits, at_limits_plans, OpStatus.APPLIED))
    redis_sync.Redis.from_url(url, db=db).flushdb()
    described = (
        f"{config.MAX_TIERS} tiers x {config.MAX_COUPONS_PER_REWARD} coupons, {config.MAX_RULES_PER_EVENT} capped rules "
        f"and {config.MAX_QUESTS_PER_EVENT} quests on the event, "
        f"tiers ARGV {len(limits.tiers_packed):,} B"
    )
    return ServerCost(award, duplicate, at_limits, described)
