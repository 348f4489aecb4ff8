"""What a member costs Redis after a year of activity: ``make bench`` phase [4c].

A regular member of the example programme, day by day for 365 days up to now: purchases (and
one refund in twenty), check-ins, logins, reviews, and a weekly thank-you coupon (what a care
moment grants) used within days about half the time, with the first-order and tier coupons. Every
operation goes through the real plans and ``member.lua``, each at its own time, so whatever a
member's keys forget with time (dedupe buckets, grant records, quest periods, coupons past their
history period, lots past their expiry) is forgotten as it would have been by now, and what the
year leaves is what a server holds for such a member today. The server forgets by its own clock,
so a key or field whose time is already past when the replay writes it goes at once (a coupon
granted in the spring, used days later in the replay, is refused ``not_found``): the state at
the end is the same, the operation count a little lower than the year's.

Run alone: ``python -m loadtest.memberyear`` (its own embedded server).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from engine.awards import plan_award
from engine.clock import DAY_MS
from engine.config import CompiledProgram, load_program
from engine.events import parse_event
from engine.ids import MemberId, derived_id
from engine.keys import Keys
from engine.operations import MemberPlan, Operation, fingerprint, member_plan, parse_coupon_use, plan_coupon_use
from engine.pipelining import AutoPipeline
from engine.scripts import Scripts
from engine.store import OpResult, OpStatus, OperationStore

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "member_day.toml"
DAYS = 365
KINDS = ("profile", "state", "ledger", "feed", "coupons", "lots")


@dataclass(frozen=True)
class YearMemory:
    members: int
    operations: int  # applied over the year, all members
    per_member_b: float  # used_memory growth / members
    coupons_granted: float  # per member, over the year
    coupons_kept: float  # per member, fields of the coupons hash now
    by_kind_b: dict[str, float]  # MEMORY USAGE per kind of member key, per member


def _day_plans(program: CompiledProgram, rng: random.Random, member: str, day: int, day_ms: int,
               purchases: list[str]) -> list[MemberPlan]:
    """One member's operations of one day, each at its own time (the day's hours)."""
    plans: list[MemberPlan] = []

    def event(kind: str, data: dict[str, Any], suffix: str = "") -> None:
        at = day_ms + rng.randrange(8 * 3_600_000, 22 * 3_600_000)
        raw = {"id": f"{member}-{day}-{kind}{suffix}", "member": member, "type": kind, "data": data, "at": at}
        plans.append(plan_award(program, parse_event(raw, program, at), at))

    if rng.random() < 0.5:
        event("login", {})
    if rng.random() < 3 / 7:
        event("checkin", {})
    if rng.random() < 1 / 3:
        event("purchase", {"amount": rng.randrange(2_000, 30_000)})
        purchases.append(f"{member}-{day}-purchase")
        if rng.random() < 1 / 3:
            event("review", {"stars": rng.randrange(3, 6)})
    if len(purchases) > 2 and rng.random() < 1 / 60:  # about one purchase in twenty comes back
        event("refund", {"of": purchases.pop(rng.randrange(len(purchases) - 2))})
    if day % 7 == 3:  # the weekly thank-you, as a care moment would grant it
        at = day_ms + 9 * 3_600_000
        op = Operation(derived_id("thanks", member, day), MemberId(member), at, fingerprint("thanks", day))
        plans.append(member_plan(program, op, at, coupons=(["weekly-10", 7 * DAY_MS, "care:thanks"],)))
    return plans


async def year_of_activity(url: str, db: int, program: CompiledProgram, prefix: str, members: int,
                           end_ms: int, seed: int = 7) -> YearMemory:
    """Run ``members`` members through the 365 days before ``end_ms`` on database ``db`` (empty)."""
    client = Redis.from_url(url, db=db, max_connections=16)
    try:
        if await client.dbsize():
            raise RuntimeError(f"database {db} is not empty")
        before = await _used_memory(client)
        scripts = Scripts()
        await scripts.load(client)
        keys = Keys(prefix)
        store = OperationStore(AutoPipeline(client), keys, scripts)
        names = [f"y{m}" for m in range(members)]
        rngs = {m: random.Random(f"{seed}:{m}") for m in names}
        purchases: dict[str, list[str]] = {m: [] for m in names}
        uses: dict[int, list[tuple[str, str, int]]] = {}  # day -> (member, coupon, at)
        first_day_ms = (end_ms - DAYS * DAY_MS) // DAY_MS * DAY_MS
        applied = granted = 0
        for day in range(DAYS):
            day_ms = first_day_ms + day * DAY_MS
            plans = [p for m in names for p in _day_plans(program, rngs[m], m, day, day_ms, purchases[m])]
            for member, coupon, at in uses.pop(day, []):
                request = parse_coupon_use({"id": f"use-{coupon}", "order": f"o-{coupon}"}, MemberId(member), coupon, at)
                plans.append(plan_coupon_use(program, request, at))
            results = await store.apply_many(plans, program)
            for plan, result in zip(plans, results):
                if isinstance(result, Exception):
                    raise result
                if result.status is not OpStatus.APPLIED:
                    continue
                applied += 1
                for coupon in _coupons(result):
                    granted += 1
                    rng = rngs[plan.op.member]
                    if rng.random() < 0.5:
                        later = rng.randrange(1, 6)
                        uses.setdefault(day + later, []).append((plan.op.member, coupon, plan.op.at_ms + later * DAY_MS))
        per_member = (await _used_memory(client) - before) / members
        pipe = client.pipeline(transaction=False)
        for m in names:
            mk = keys.member(MemberId(m))
            for kind in KINDS:
                pipe.memory_usage(getattr(mk, kind), samples=0)
            pipe.hlen(mk.coupons)
        replies = await pipe.execute()
        width = len(KINDS) + 1
        by_kind = {k: sum(int(replies[j * width + i] or 0) for j in range(members)) / members for i, k in enumerate(KINDS)}
        kept = sum(int(replies[j * width + len(KINDS)]) for j in range(members)) / members
        return YearMemory(members, applied, per_member, granted / members, kept, by_kind)
    finally:
        await client.aclose()


def _coupons(result: OpResult) -> list[str]:
    return [e["data"]["coupon"] for e in result.effects if e["type"] == "reward" and "coupon" in e["data"]]


async def _used_memory(client: Redis) -> int:
    """``used_memory`` once incremental rehashing has settled (two equal readings, 3 s at most)."""
    last = int((await client.info("memory"))["used_memory"])
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = int((await client.info("memory"))["used_memory"])
        if now == last:
            break
        last = now
    return last


def describe(year: YearMemory) -> str:
    kinds = ", ".join(f"{k} {v:,.0f}" for k, v in year.by_kind_b.items())
    return (f"  per member after a year: {year.per_member_b:,.0f} B of used_memory ({year.operations / year.members:,.0f} "
            f"operations each; MEMORY USAGE by key: {kinds}); coupons granted {year.coupons_granted:.1f}, "
            f"kept {year.coupons_kept:.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=200)
    args = parser.parse_args(argv)
    from realtime.embedded import EmbeddedValkey

    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedValkey(Path(tmp))
        server.start()
        try:
            year = asyncio.run(year_of_activity(server.url, 1, load_program(CONFIG), "year", args.members,
                                                int(time.time() * 1000)))
        finally:
            server.stop()
    print(describe(year))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
