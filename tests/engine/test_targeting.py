"""Targeting (专属) and member days (engine/targeting.py) through the real member script."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.clock import DAY_MS
from engine.config import ConfigError
from engine.members import MemberStore, parse_profile
from engine.operations import member_plan
from engine.redeem import Redemption, plan_redeem_member
from engine.targeting import eligible, pack

TZ = ZoneInfo("Asia/Shanghai")

BASE = """
[program]
name = "targeting"
timezone = "Asia/Shanghai"

[events.purchase]
fields.amount = { type = "int", min = 1 }

[events.review]

[[tiers]]
id = "bronze"
name = "Bronze"
xp = 0

[[tiers]]
id = "gold"
name = "Gold"
xp = 100
points_multiplier = 1.5

[rules.buy_xp]
event = "purchase"
grant = "xp"
per = { field = "amount", every = 1, amount = 1 }

[rules.buy_points]
event = "purchase"
grant = "points"
per = { field = "amount", every = 1, amount = 1 }

[catalog.lounge]
title = "Lounge pass"
value_cents = 0
points_cost = 10
audience = { tiers = ["gold"] }
"""

TARGETED = BASE + """
[rules.gold_review]
event = "review"
grant = "points"
fixed = 50
audience = { tiers = ["gold"] }

[rules.vip_review]
event = "review"
grant = "points"
fixed = 7
audience = { tags = ["vip", "staff"] }

[rules.newcomer_review]
event = "review"
grant = "points"
fixed = 3
audience = { new_days = 30 }

[rules.back_review]
event = "review"
grant = "points"
fixed = 1000
audience = { dormant = true }

[quests.gold_reviews]
title = "Two reviews, for Gold"
kind = "once"
event = "review"
target = 2
rewards = { points = 100 }
audience = { tiers = ["gold"] }

[member_days.double-12]
title = "Member day"
days = ["12-12"]
multiplier = 2
tiers = ["gold"]
"""


def test_an_audience_or_member_day_that_cannot_work_is_named(compile_toml: Any) -> None:
    text = TARGETED.replace('fixed = 50\naudience = { tiers = ["gold"] }', 'fixed = 50\naudience = { tiers = ["platinum"] }')
    text = text.replace('days = ["12-12"]', 'days = ["12-32"]')
    text = text[: text.rindex('tiers = ["gold"]')] + 'tiers = ["tin"]\n'
    with pytest.raises(ConfigError) as info:
        compile_toml(text.replace("multiplier = 2\n", "multiplier = 1.0005\n"))
    paths = sorted(p.path for p in info.value.problems)
    assert "member_days.double-12.multiplier" in paths
    with pytest.raises(ConfigError) as info:
        compile_toml(text)
    paths = sorted(p.path for p in info.value.problems)
    assert paths == ["member_days.double-12.days[0]", "member_days.double-12.tiers[0]",
                     "rules.gold_review.audience.tiers[0]"]


def noon(month: int, day: int) -> int:
    year = datetime.now(TZ).year + 1  # ahead of real time: no key or field expires during the test
    return int(datetime(year, month, day, 12, tzinfo=TZ).timestamp() * 1000)


def test_rules_and_quests_for_an_audience_earn_for_its_members_only(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        now = noon(3, 1)
        async with engine(program_=compile_toml(TARGETED), now_ms=now) as e:
            members = MemberStore(e.redis, e.keys)
            await members.put_profile("vip", parse_profile({"tags": ["vip"], "joined_at": now - 40 * DAY_MS}, "vip"))
            await members.put_profile("new", parse_profile({"joined_at": now - 5 * DAY_MS}, "new"))

            async def review(member: str, n: int) -> dict[str, int]:
                result = await e.apply(f"r-{member}-{n}", member, "review")
                return {x["data"]["reason"]: x["data"]["amount"] for x in result.effects if x["type"] == "points"}

            assert await review("plain", 1) == {}
            assert await review("vip", 1) == {"vip_review": 7}  # a tag; joined 40 days ago: not new
            assert await review("new", 1) == {"newcomer_review": 3}
            await e.apply("o-1", "gold", "purchase", {"amount": 100})  # Gold from here on
            assert await review("gold", 1) == {"gold_review": 75}  # Gold's own multiplier applies
            assert await review("gold", 2) == {"gold_review": 75, "quest:gold_reviews": 100}
            snapshot = await members.snapshot("plain", e.program, now)
            assert [q["id"] for q in snapshot["quests"]] == []  # a quest for Gold is not shown to others
            assert [q["id"] for q in (await members.snapshot("gold", e.program, now))["quests"]] == ["gold_reviews"]
            # The quest counted nothing for the others.
            assert await e.redis.hkeys(e.keys.member("vip").state) == []

    asyncio.run(run())


def test_a_dormant_members_rule_applies_before_the_return_wakes_them(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=compile_toml(TARGETED), now_ms=noon(3, 1)) as e:
            await e.redis.hset(e.keys.member("m-1").profile, "dm", str(e.now_ms - 60 * DAY_MS))
            first = await e.apply("r-1", "m-1", "review")
            assert [x["data"]["amount"] for x in first.effects if x["type"] == "points"] == [1000]
            await e.redis.hdel(e.keys.member("m-1").profile, "dm")
            second = await e.apply("r-2", "m-1", "review")
            assert [x for x in second.effects if x["type"] == "points"] == []

    asyncio.run(run())


def test_a_member_day_multiplies_points_for_its_tiers_on_its_days(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        day, before = noon(12, 12), noon(12, 11)
        async with engine(program_=compile_toml(TARGETED), now_ms=day) as e:
            await e.apply("o-0", "gold", "purchase", {"amount": 100}, at=before)  # Gold before the day

            async def points(member: str, order: str, at: int) -> int:
                result = await e.apply(order, member, "purchase", {"amount": 100}, at=at)
                return sum(x["data"]["amount"] for x in result.effects
                           if x["type"] == "points" and x["data"]["reason"] == "buy_points")

            assert await points("gold", "o-1", day) == 300  # 100 x 1.5 (Gold) x 2 (the day)
            assert await points("gold", "o-2", before) == 150
            assert await points("bronze", "o-3", day) == 100  # the day is for Gold only

    asyncio.run(run())


def test_a_catalog_item_for_an_audience_refuses_anyone_else(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=compile_toml(TARGETED), now_ms=noon(3, 1)) as e:
            for member in ("bronze", "gold"):
                await e.apply(f"o-{member}", member, "purchase", {"amount": 100 if member == "gold" else 99})

            def redemption(member: str) -> Redemption:
                return Redemption(member=member, op_id=f"x-{member}", at_ms=e.now_ms, points_cost=10, limit=0,
                                  valid_ms=30 * DAY_MS, item="lounge")

            refused = await e.store.apply(plan_redeem_member(e.program, redemption("bronze"), e.now_ms), e.program)
            assert (refused.status.value, refused.refusal) == ("refused", "not_eligible")
            assert await e.balance("bronze") == 99  # nothing written
            done = await e.store.apply(plan_redeem_member(e.program, redemption("gold"), e.now_ms), e.program)
            assert done.status.value == "applied" and await e.coupons("gold") == ["lounge"]

    asyncio.run(run())


def test_pythons_test_is_the_scripts(engine: Any, compile_toml: Any) -> None:
    """``eligible`` (what the snapshot shows) decides as member.lua does, over every combination of
    the tests and the facts."""
    program = compile_toml(BASE)
    now = noon(3, 1)
    audiences = [pack("bronze", tiers, tags, new, dormant)
                 for tiers, tags, new, dormant in itertools.product((None, ["bronze"], ["gold"]), (None, ["vip"]),
                                                                    (None, 10), (None, True, False))]
    facts = list(itertools.product((None, "gold"), ([], ["vip"]), (None, now - DAY_MS, now - 20 * DAY_MS), (False, True)))

    async def run() -> None:
        async with engine(program_=program, now_ms=now) as e:
            members = MemberStore(e.redis, e.keys)
            for n, (tier, tags, joined, dormant) in enumerate(facts):
                member = f"m-{n}"
                fields: dict[str, Any] = {}
                if tags:
                    fields["tags"] = tags
                if joined is not None:
                    fields["joined_at"] = joined
                if fields:
                    await members.put_profile(member, parse_profile(fields, member))
                if tier:
                    await e.redis.hset(e.keys.member(member).profile, "tier", tier)
                if dormant:
                    await e.redis.hset(e.keys.member(member).profile, "dm", str(now - 90 * DAY_MS))
                for k, audience in enumerate(audiences):
                    plan = e.plan(f"e-{k}", member, "purchase", {"amount": 1})
                    targeted = member_plan(e.program, plan.op, now, grants=plan.args.grants, targets=(("g", 0, audience),))
                    result = await e.store.apply(targeted, e.program)
                    earned = any(x["type"] == "xp" for x in result.effects)
                    assert earned == eligible(audience, tier, tags, joined, dormant, now), (audience, tier, tags, joined,
                                                                                            dormant)

    asyncio.run(run())
