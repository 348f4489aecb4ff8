"""Tiers kept or lost (``[tier_policy]``, engine/tiering.py): walked across simulated years with
the real scheduler and the real member script."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest

from engine.clock import DAY_MS, ManualClock
from engine.config import ConfigError
from engine.jobs import jobs_key, plan_tier_review, parse_job, shard_of, tier_job_id
from engine.members import MemberStore
from engine.scheduler import Scheduler

TZ = ZoneInfo("Asia/Shanghai")


def ms(year: int, month: int = 1, day: int = 1, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=TZ).timestamp() * 1000)


BASE = """
[program]
name = "tiers"
timezone = "Asia/Shanghai"

[events.purchase]
fields.amount = { type = "int", min = 1 }

[events.refund]
reverses = "purchase"
fields.of = { type = "str" }
fields.amount = { type = "int", min = 1, required = false }

[rules.buy]
event = "purchase"
grant = "xp"
per = { field = "amount", every = 1, amount = 1 }
"""

YEAR = BASE + """
[tier_policy]
window = "year"
grace_days = 30

[[tiers]]
id = "base"
name = "Base"
xp = 0

[[tiers]]
id = "silver"
name = "Silver"
xp = 100

[[tiers]]
id = "gold"
name = "Gold"
xp = 300
"""


def problems(compile_toml: Any, text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        compile_toml(text)
    return [(p.path, p.reason) for p in info.value.problems]


def test_a_policy_that_cannot_work_is_refused_with_its_key_path(compile_toml: Any) -> None:
    tiers = '[[tiers]]\nid = "base"\nname = "Base"\nxp = 0\n[[tiers]]\nid = "vip"\nname = "VIP"\nxp = 10\n'
    found = problems(compile_toml, BASE + '[tier_policy]\ngrace_days = 10\n' + tiers)
    assert [p for p, _ in found] == ["tier_policy.grace_days"] and "lifetime" in found[0][1]
    found = problems(compile_toml, BASE + '[tier_policy]\nwindow = "year"\nmonths = 6\n' + tiers)
    assert [p for p, _ in found] == ["tier_policy.months"]
    found = problems(compile_toml, BASE + '[tier_policy]\nwindow = "rolling"\nmonths = 1\ngrace_days = 40\n' + tiers)
    assert [p for p, _ in found] == ["tier_policy.grace_days"]
    found = problems(compile_toml, BASE + '[tier_policy]\nqualify_on = "spend"\nspend_events = ["refund", "nope"]\n' + tiers)
    assert sorted(p for p, _ in found) == ["tier_policy.spend_events[0]", "tier_policy.spend_events[1]",
                                           "tiers[base].spend", "tiers[vip].spend"]
    found = problems(compile_toml, BASE + tiers.replace("xp = 10", "xp = 10\nspend = 500"))
    assert [p for p, _ in found] == ["tiers[vip].spend"] and "qualify_on" in found[0][1]
    spend_tiers = tiers.replace("xp = 0", "xp = 0\nspend = 0").replace("xp = 10", "xp = 0\nspend = 0")
    found = problems(compile_toml, BASE + '[tier_policy]\nqualify_on = "spend"\n' + spend_tiers)
    assert [p for p, _ in found] == ["tiers[vip].spend"] and "greater" in found[0][1]


def run_jobs(e: Any, at_ms: int) -> Any:
    async def go() -> None:
        scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(at_ms), lambda: e.program)
        await scheduler.run_due()
        await scheduler.stop()
    return go()


async def tier_of(e: Any, member: str) -> Any:
    return (await MemberStore(e.redis, e.keys).snapshot(member, e.program, e.now_ms))["tier"]


def test_a_years_tier_is_held_to_the_end_of_next_year_then_graced_then_dropped_one_level(engine: Any,
                                                                                         compile_toml: Any) -> None:
    """Gold reached in 2027 is held until the end of 2028. 2028's 50 XP no longer reach it: the
    review on 2029-01-01 grants 30 days of grace; nothing more is earned, so on 2029-01-31 it drops
    to Silver (one level, though 50 XP reach only Base), held to the end of 2029's next year...;
    every step is in the feed and the tier log, with the programme's hash."""

    async def run() -> None:
        now = ms(2027, 3, 1, 12)
        async with engine(program_=compile_toml(YEAR), now_ms=now) as e:
            shard = jobs_key(e.keys, shard_of("m-1"))
            up = await e.apply("o-1", "m-1", "purchase", {"amount": 320})
            assert [(x["type"], x["data"]) for x in up.effects if x["type"] == "tier_up"] == [
                ("tier_up", {"from": "base", "to": "silver", "until_ms": ms(2029)}),
                ("tier_up", {"from": "silver", "to": "gold", "until_ms": ms(2029)}),
            ]
            assert await e.redis.zscore(shard, tier_job_id("m-1", ms(2029))) == ms(2029)
            tier = await tier_of(e, "m-1")
            # Held until the end of 2028 on 2027's XP; what keeps it then is 2028's.
            assert (tier["id"], tier["until_ms"], tier["qualified"], tier["keep"]) == ("gold", ms(2029), 320,
                                                                                       {"need": 300, "by_ms": ms(2029)})
            e.now_ms = ms(2028, 6, 1, 12)
            await e.apply("o-2", "m-1", "purchase", {"amount": 50})
            tier = await tier_of(e, "m-1")
            assert (tier["id"], tier["qualified"], tier["keep"]) == ("gold", 50, {"need": 250, "by_ms": ms(2029)})

            await run_jobs(e, ms(2028, 12, 31))  # not due yet: never dropped before its expiry
            assert (await tier_of(e, "m-1"))["id"] == "gold"
            await run_jobs(e, ms(2029, 1, 1) + 5 * DAY_MS)  # late: it decides as of the expiry all the same
            e.now_ms = ms(2029, 1, 6)
            tier = await tier_of(e, "m-1")
            assert (tier["id"], tier["grace"], tier["until_ms"]) == ("gold", True, ms(2029, 1, 31))
            assert tier["keep"] == {"need": 250, "by_ms": ms(2029, 1, 31)}  # 2028 is the year it was held for
            await run_jobs(e, ms(2029, 2, 1))
            e.now_ms = ms(2029, 2, 1)
            tier = await tier_of(e, "m-1")
            assert (tier["id"], tier["grace"], tier["until_ms"]) == ("silver", False, ms(2030))
            changes = [(c["change"], c["from_tier"], c["to_tier"], c["version"]) for c in tier["changes"]]
            h = e.program.program_hash
            assert changes == [("up", "base", "silver", h), ("up", "silver", "gold", h), ("grace", "gold", "gold", h),
                               ("down", "gold", "silver", h)]
            feed = [msgpack.unpackb(f[b"d"], raw=False) for _, f in await e.redis.xrange(e.keys.member("m-1").feed)]
            kinds = [kind for entry in feed for kind, _ in entry if kind.startswith("tier")]
            assert kinds == ["tier_up", "tier_up", "tier_grace", "tier_down"]

            # A second run of a review is the same operation: applied once.
            again = await e.store.apply(plan_tier_review(parse_job(tier_job_id("m-1", ms(2029, 1, 31)), 0), e.program,
                                                         ms(2029, 3, 1)), e.program)
            assert again.status.value == "duplicate"
            # Silver's review: 2029 earned nothing, grace, then Base (held for good: no review).
            await run_jobs(e, ms(2030, 1, 2))
            await run_jobs(e, ms(2030, 2, 1))
            tier = await tier_of(e, "m-1")
            assert (tier["id"], tier["until_ms"], tier["keep"]) == ("base", None, None)
            assert [c["change"] for c in tier["changes"]][-2:] == ["grace", "down"]
            assert await e.redis.zcard(shard) == 0

    asyncio.run(run())


def test_reaching_the_tier_again_in_grace_keeps_it_and_a_stale_review_does_nothing(engine: Any,
                                                                                    compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=compile_toml(YEAR), now_ms=ms(2027, 3, 1, 12)) as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 150})  # Silver until the end of 2028
            await run_jobs(e, ms(2029, 1, 2))  # 2028: nothing earned: grace
            e.now_ms = ms(2029, 1, 10, 12)
            kept = await e.apply("o-2", "m-1", "purchase", {"amount": 100})
            assert [(x["type"], x["data"]) for x in kept.effects if x["type"].startswith("tier")] == [
                ("tier_kept", {"tier": "silver", "until_ms": ms(2031)})]
            tier = await tier_of(e, "m-1")
            assert (tier["id"], tier["grace"], tier["until_ms"]) == ("silver", False, ms(2031))
            # The grace's end review is stale now: the member's expiry moved.
            stale = await e.store.apply(plan_tier_review(parse_job(tier_job_id("m-1", ms(2029, 1, 31)), 0), e.program,
                                                         ms(2029, 2, 1)), e.program)
            assert stale.status.value == "applied" and stale.effects == []
            await run_jobs(e, ms(2029, 2, 1))
            assert (await tier_of(e, "m-1"))["id"] == "silver"

    asyncio.run(run())


ROLLING_SPEND = BASE + """
[tier_policy]
qualify_on = "spend"
window = "rolling"
months = 3

[[tiers]]
id = "base"
name = "Base"
xp = 0
spend = 0

[[tiers]]
id = "vip"
name = "VIP"
xp = 0
spend = 10000
"""


def test_spend_over_a_rolling_window_reaches_a_tier_a_refund_never_drops_it_early(engine: Any, compile_toml: Any) -> None:
    """¥60 in March and ¥50 in April reach VIP (¥100 over 3 months), held 3 months from that day.
    A refund of ¥50 takes the spend back but not the tier; the review in July counts the window
    ending then (May to July: ¥0), and there is no grace: Base."""

    async def run() -> None:
        async with engine(program_=compile_toml(ROLLING_SPEND), now_ms=ms(2027, 3, 10, 12)) as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 6000})
            e.now_ms = ms(2027, 4, 10, 12)
            up = await e.apply("o-2", "m-1", "purchase", {"amount": 5000})
            assert [x["data"] for x in up.effects if x["type"] == "tier_up"] == [
                {"from": "base", "to": "vip", "until_ms": ms(2027, 7, 11)}]
            tier = await tier_of(e, "m-1")
            assert (tier["qualify_on"], tier["qualified"], tier["next"]) == ("spend", 11000, None)
            e.now_ms = ms(2027, 4, 11, 12)
            await e.apply("r-1", "m-1", "refund", {"of": "o-2"})
            tier = await tier_of(e, "m-1")
            # The review counts May to July: nothing yet.
            assert (tier["id"], tier["qualified"], tier["keep"]) == ("vip", 6000, {"need": 10000, "by_ms": ms(2027, 7, 11)})
            e.now_ms = ms(2027, 6, 1, 12)
            tier = await tier_of(e, "m-1")  # March has left the window
            assert (tier["qualified"], tier["keep"]["need"]) == (0, 10000)
            await run_jobs(e, ms(2027, 7, 11))
            e.now_ms = ms(2027, 7, 11, 12)
            tier = await tier_of(e, "m-1")
            assert (tier["id"], tier["until_ms"]) == ("base", None)

    asyncio.run(run())


def test_a_tier_held_before_the_policy_gets_an_expiry_at_the_next_operation(engine: Any, compile_toml: Any) -> None:
    lifetime = YEAR.replace('[tier_policy]\nwindow = "year"\ngrace_days = 30\n', "")
    async def run() -> None:
        async with engine(program_=compile_toml(lifetime), now_ms=ms(2027, 3, 1, 12)) as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 150})
            assert (await e.profile("m-1"))["tier"] == "silver"
            e.program = compile_toml(YEAR)
            e.now_ms = ms(2027, 5, 1, 12)
            after = await e.apply("o-2", "m-1", "purchase", {"amount": 1})
            assert [x["data"] for x in after.effects if x["type"] == "tier_kept"] == [{"tier": "silver",
                                                                                       "until_ms": ms(2029)}]
            tier = await tier_of(e, "m-1")
            assert (tier["id"], tier["qualified"], tier["until_ms"]) == ("silver", 1, ms(2029))

    asyncio.run(run())


def test_a_rolling_review_at_a_months_turn_counts_the_months_before_it(engine: Any, compile_toml: Any) -> None:
    """VIP reached on April 30th is held 3 months from the day's end, to August 1st; May's spend is
    within the 3 months the review counts (May to July), so the tier is kept."""

    async def run() -> None:
        async with engine(program_=compile_toml(ROLLING_SPEND), now_ms=ms(2027, 4, 30, 12)) as e:
            up = await e.apply("o-1", "m-1", "purchase", {"amount": 10000})
            assert [x["data"]["until_ms"] for x in up.effects if x["type"] == "tier_up"] == [ms(2027, 8, 1)]
            e.now_ms = ms(2027, 5, 20, 12)
            await e.apply("o-2", "m-1", "purchase", {"amount": 10000})
            assert (await tier_of(e, "m-1"))["keep"] == {"need": 0, "by_ms": ms(2027, 8, 1)}
            await run_jobs(e, ms(2027, 8, 1))
            e.now_ms = ms(2027, 8, 1, 12)
            tier = await tier_of(e, "m-1")
            assert (tier["id"], tier["until_ms"]) == ("vip", ms(2027, 11, 1))
            assert [c["change"] for c in tier["changes"]] == ["up", "kept"]

    asyncio.run(run())
