"""Members: profile validation, and the snapshot an app draws from, read back from a real Valkey."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.errors import InvalidInput
from engine.members import MemberStore, parse_profile

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY_MS = 86_400_000


# --- parse_profile: pure --------------------------------------------------------------------


def test_full_profile_parses() -> None:
    """All four facts parse; tags are de-duplicated and sorted; joined_at becomes epoch ms."""
    profile = parse_profile(
        {"joined_at": "2026-01-01T00:00:00+08:00", "birthday": "02-29", "referrer": "m-7", "tags": ["vip", "tea", "vip"]},
        "m-42",
    )
    assert profile.fields == {
        "joined_at_ms": "1767196800000",
        "birthday": "02-29",
        "referrer": "m-7",
        "tags": '["tea","vip"]',
    }


def test_only_given_fields_are_written() -> None:
    """A partial profile carries only its own fields (the rest keep their stored values)."""
    assert parse_profile({"birthday": "12-31"}, "m-1").fields == {"birthday": "12-31"}
    assert parse_profile({"tags": []}, "m-1").fields == {"tags": "[]"}
    assert parse_profile({"joined_at": 1_767_196_800_000}, "m-1").fields == {"joined_at_ms": "1767196800000"}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "body"),
        ("birthday", "body"),
        ({}, "body"),
        ({"nickname": "Tea"}, "nickname"),
        ({"birthday": "13-01"}, "birthday"),
        ({"birthday": "00-10"}, "birthday"),
        ({"birthday": "02-30"}, "birthday"),
        ({"birthday": "04-31"}, "birthday"),
        ({"birthday": "2-29"}, "birthday"),
        ({"birthday": "1990-02-28"}, "birthday"),
        ({"birthday": 229}, "birthday"),
        ({"birthday": "٠٢-٢٩"}, "birthday"),  # Arabic-Indic digits are not a month-day
        ({"referrer": "m-42"}, "referrer"),  # itself
        ({"referrer": "m{1}"}, "referrer"),
        ({"referrer": 7}, "referrer"),
        ({"tags": "vip"}, "tags"),
        ({"tags": [f"t{i}" for i in range(33)]}, "tags"),
        ({"tags": ["vip", "has space"]}, "tags[1]"),
        ({"tags": ["vip", 3]}, "tags[1]"),
        ({"tags": ["x" * 65]}, "tags[0]"),
        ({"joined_at": "last year"}, "joined_at"),
        ({"joined_at": "2026-01-01T00:00:00"}, "joined_at"),
    ],
)
def test_bad_profile_is_refused_at_its_field(raw: Any, field: str) -> None:
    """Each bad profile fact is refused, naming the field."""
    with pytest.raises(InvalidInput) as info:
        parse_profile(raw, "m-42")
    assert info.value.field == field


def test_tag_limits_are_inclusive() -> None:
    """32 tags of 64 characters are allowed."""
    tags = [f"{i:02d}" + "x" * 62 for i in range(32)]
    assert parse_profile({"tags": tags}, "m-1").fields["tags"].count(",") == 31


# --- snapshots: real server ----------------------------------------------------------------


def local_bounds(now_ms: int) -> tuple[int, int]:
    """End of the local day and of the local ISO week holding now_ms."""
    local = datetime.fromtimestamp(now_ms / 1000, SHANGHAI)
    midnight = datetime(local.year, local.month, local.day, tzinfo=SHANGHAI)
    day_end = midnight + timedelta(days=1)
    week_end = midnight + timedelta(days=8 - local.isoweekday())
    return int(day_end.timestamp() * 1000), int(week_end.timestamp() * 1000)


def test_snapshot_after_a_first_order(engine, program) -> None:
    """XP, tier and the way to the next, balance, quests with progress and deadlines, coupon terms, feed id."""

    async def run() -> None:
        async with engine() as e:
            result = await e.apply("o-1", "m-42", "purchase", {"amount": 19900})
            members = MemberStore(e.redis, e.keys)
            snap = await members.snapshot("m-42", program, e.now_ms)
            day_end, week_end = local_bounds(e.now_ms)

            assert snap["member"] == "m-42"
            assert snap["xp"] == 299
            assert snap["tier"] == {
                "id": "bronze",
                "name": "Bronze",
                "points_multiplier": 1.0,
                "next": {"id": "silver", "name": "Silver", "xp": 1000, "xp_to_go": 701},
                "qualify_on": "xp",
                "qualified": 299,
                "until_ms": None,
                "grace": False,
                "keep": None,
                "changes": [],
            }
            year = datetime.fromtimestamp(e.now_ms / 1000, SHANGHAI).year  # end_of_next_year
            next_year_end = int(datetime(year + 2, 1, 1, tzinfo=SHANGHAI).timestamp() * 1000)
            assert snap["points"] == {"balance": 299, "expiring": [{"amount": 299, "expires_at_ms": next_year_end}], "debt": 0}
            quests = {q["id"]: q for q in snap["quests"]}
            assert list(quests) == [q.id for q in program.quests if not q.days]  # holidays: on their days only
            view = {k: (q["progress"], q["target"], q["state"], q["deadline_ms"], q["repeats"]) for k, q in quests.items()}
            assert view["first_order"] == (1, 1, "completed", None, False)
            assert view["weekly_spend"] == (19900, 30000, "active", week_end, True)
            assert view["daily_checkin"] == (0, 1, "active", day_end, True)
            assert view["daily_share"] == (0, 2, "active", day_end, True)
            assert view["invite_friends"] == (0, 3, "active", None, False)
            assert quests["first_order"]["rewards"] == {"xp": 100, "points": 100, "coupons": ["free-shipping"]}
            window = quests["double_twelve_big_orders"]
            assert window["starts_at_ms"] == 1_797_004_800_000
            assert window["deadline_ms"] == 1_797_004_800_000 + DAY_MS
            assert snap["rewards"] == [
                {
                    "coupon": "o-1:c1",
                    "state": "granted",
                    "item": "free-shipping",
                    "granted_at_ms": e.now_ms,
                    "reason": "quest:first_order",
                    "event": "o-1",
                    "kind": "coupon",
                    "title": "Free shipping on your next order",
                    "value_cents": 1000,
                    "min_spend_cents": 0,
                    "expires_at_ms": e.now_ms + 30 * DAY_MS,
                }
            ]
            assert snap["profile"] == {"joined_at_ms": None, "birthday": None, "referrer": None, "tags": []}
            assert snap["feed_id"] == result.effects[-1]["id"]
            last = await e.redis.xrevrange(e.keys.member("m-42").feed, count=1)
            assert snap["feed_id"].startswith(last[0][0].decode() + "-")  # the newest entry's last effect
            assert snap["program_hash"] == program.program_hash

    asyncio.run(run())


def test_snapshot_after_a_tier_up(engine, program) -> None:
    """A gold member: tier, multiplier, distance to platinum and every coupon with its terms."""

    async def run() -> None:
        async with engine() as e:
            await e.apply("o-big", "m-9", "purchase", {"amount": 600_000})
            snap = await MemberStore(e.redis, e.keys).snapshot("m-9", program, e.now_ms)
            assert snap["xp"] == 6400
            assert snap["tier"]["id"] == "gold"
            assert snap["tier"]["points_multiplier"] == 1.25
            assert snap["tier"]["next"] == {"id": "platinum", "name": "Platinum", "xp": 20000, "xp_to_go": 13600}
            assert snap["points"]["balance"] == 5800
            assert [(r["item"], r["reason"], r["value_cents"], r["min_spend_cents"], r["expires_at_ms"] - e.now_ms)
                    for r in snap["rewards"]] == [
                ("free-shipping", "quest:first_order", 1000, 0, 30 * DAY_MS),
                ("weekly-10", "quest:weekly_spend", 1000, 5000, 7 * DAY_MS),
                ("silver-welcome", "tier:silver", 1000, 9900, 30 * DAY_MS),
                ("gold-welcome", "tier:gold", 3000, 19900, 30 * DAY_MS),
                ("free-shipping", "tier:gold", 1000, 0, 30 * DAY_MS),
            ]
            quests = {q["id"]: q for q in snap["quests"]}
            assert (quests["weekly_spend"]["progress"], quests["weekly_spend"]["state"]) == (30000, "completed")

    asyncio.run(run())


def test_top_tier_has_no_next(engine, program) -> None:
    """A diamond member has nowhere further to go."""

    async def run() -> None:
        async with engine() as e:
            await e.redis.hset(e.keys.member("m-1").profile, mapping={"xp": 150_000, "pts": 0, "tier": "diamond"})
            snap = await MemberStore(e.redis, e.keys).snapshot("m-1", program, e.now_ms)
            assert (snap["tier"]["id"], snap["tier"]["next"]) == ("diamond", None)

    asyncio.run(run())


def test_retired_tier_id_shows_the_tier_the_xp_reaches(engine, program) -> None:
    """A stored tier id the programme no longer has: the snapshot shows the tier member.lua uses (by XP)."""

    async def run() -> None:
        async with engine() as e:
            await e.redis.hset(e.keys.member("m-1").profile, mapping={"xp": 6400, "pts": 0, "tier": "legacy-gold"})
            review = await e.apply("rv-1", "m-1", "review", {"stars": 5})
            # member.lua falls back to the highest tier 6400 XP reaches: gold, x1.25
            assert [x["data"]["amount"] for x in review.effects if x["type"] == "points"] == [25]
            snap = await MemberStore(e.redis, e.keys).snapshot("m-1", program, e.now_ms)
            assert snap["tier"]["id"] == "gold"
            assert snap["tier"]["next"]["xp_to_go"] == 20000 - 6400

    asyncio.run(run())


def test_profile_only_member_has_a_snapshot(engine, program) -> None:
    """A member the shop described but who has no events yet: bronze, nothing earned, feed from 0-0."""

    async def run() -> None:
        async with engine() as e:
            members = MemberStore(e.redis, e.keys)
            await members.put_profile("m-1", parse_profile({"birthday": "02-29", "tags": ["b", "a"]}, "m-1"))
            await members.put_profile("m-1", parse_profile({"referrer": "m-7"}, "m-1"))
            snap = await members.snapshot("m-1", program, e.now_ms)
            assert (snap["xp"], snap["tier"]["id"], snap["tier"]["next"]["xp_to_go"]) == (0, "bronze", 1000)
            assert snap["points"]["balance"] == 0
            assert snap["profile"] == {"joined_at_ms": None, "birthday": "02-29", "referrer": "m-7", "tags": ["a", "b"]}
            assert snap["feed_id"] == "0-0"
            assert snap["rewards"] == []
            # awards leave the profile facts alone
            await e.apply("c-1", "m-1", "checkin")
            snap = await members.snapshot("m-1", program, e.now_ms)
            assert snap["profile"]["birthday"] == "02-29"
            assert (snap["xp"], snap["points"]["balance"]) == (5, 10)

    asyncio.run(run())


def test_a_member_with_no_history_has_an_empty_snapshot(engine, program) -> None:
    """A valid id with no events and no profile: the first tier, nothing earned, every quest at 0."""

    async def run() -> None:
        async with engine() as e:
            snap = await MemberStore(e.redis, e.keys).snapshot("m-nobody", program, e.now_ms)
            assert (snap["member"], snap["xp"], snap["tier"]["id"]) == ("m-nobody", 0, program.tiers[0].id)
            assert snap["points"] == {"balance": 0, "expiring": [], "debt": 0}
            assert [q["progress"] for q in snap["quests"]] == [0] * len([q for q in program.quests if not q.days])
            assert snap["rewards"] == [] and snap["feed_id"] == "0-0"
            assert await e.redis.keys(f"{e.keys.prefix}:*") == []  # reading writes nothing

    asyncio.run(run())


QUEST_STATES = """
[program]
name = "states"
timezone = "Asia/Shanghai"

[events.visit]

[[tiers]]
id = "base"
name = "Base"
xp = 0

[quests.past]
title = "Past"
kind = "window"
event = "visit"
target = 2
starts = {past_start}
ends = {past_end}

[quests.now]
title = "Now"
kind = "window"
event = "visit"
target = 2
starts = {now_start}
ends = {now_end}

[quests.soon]
title = "Soon"
kind = "window"
event = "visit"
target = 1
starts = {soon_start}
ends = {soon_end}

[quests.daily]
title = "Daily"
kind = "daily"
event = "visit"
target = 2
"""


def test_quest_states(engine, compile_toml) -> None:
    """Window quests are upcoming before they start, active inside, ended after; reached targets complete."""

    async def run() -> None:
        async with engine() as e:
            def iso(offset_days: float) -> str:
                return datetime.fromtimestamp(e.now_ms / 1000 + offset_days * 86_400, SHANGHAI).isoformat()

            program = compile_toml(QUEST_STATES.format(
                past_start=iso(-3), past_end=iso(-2), now_start=iso(-1), now_end=iso(1),
                soon_start=iso(2), soon_end=iso(3),
            ))
            members = MemberStore(e.redis, e.keys)
            await e.apply("v-1", "m-1", "visit", program=program)

            def states(snap: dict[str, Any]) -> dict[str, tuple[int, str]]:
                return {q["id"]: (q["progress"], q["state"]) for q in snap["quests"]}

            snap = await members.snapshot("m-1", program, e.now_ms)
            assert states(snap) == {"past": (0, "ended"), "now": (1, "active"), "soon": (0, "upcoming"),
                                    "daily": (1, "active")}
            soon = next(q for q in snap["quests"] if q["id"] == "soon")
            assert soon["starts_at_ms"] == e.now_ms + 2 * DAY_MS
            assert soon["deadline_ms"] == e.now_ms + 3 * DAY_MS

            await e.apply("v-2", "m-1", "visit", program=program)
            assert states(await members.snapshot("m-1", program, e.now_ms)) == {
                "past": (0, "ended"), "now": (2, "completed"), "soon": (0, "upcoming"), "daily": (2, "completed"),
            }
            # the next local day: the daily quest starts over, the window quest stays completed
            assert states(await members.snapshot("m-1", program, e.now_ms + DAY_MS)) == {
                "past": (0, "ended"), "now": (2, "completed"), "soon": (0, "upcoming"), "daily": (0, "active"),
            }

    asyncio.run(run())


def test_a_join_date_is_remembered_until_a_put_changes_it(engine) -> None:
    """A game reads a member's join date on every help: the store remembers it (one HGET for two
    reads, counted by the server), and a profile write through it is seen at once."""
    import asyncio

    from engine.members import MemberStore, Profile

    async def run() -> None:
        async with engine() as e:
            members = MemberStore(e.redis, e.keys, runner=e.pipeline)
            await members.put_profile("m-1", Profile({"joined_at_ms": "1000"}))
            await e.redis.config_resetstat()
            assert await members.joined_at_ms("m-1") == 1000
            assert await members.joined_at_ms("m-1") == 1000
            stats = await e.redis.info("commandstats")
            assert int(stats["cmdstat_hget"]["calls"]) == 1
            await members.put_profile("m-1", Profile({"joined_at_ms": "2000"}))
            assert await members.joined_at_ms("m-1") == 2000

    asyncio.run(run())
