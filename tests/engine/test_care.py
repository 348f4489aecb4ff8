"""Care moments: the pure rules (birthday windows, the next birthday job, referral loops, holiday
days, the programme's checks) and, on the real server, each moment granted once per occasion
however often it is started: a welcome, the referrer's two gifts, a birthday across years and
changes, a holiday's first purchase."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.care import (
    BIRTHDAY, CareMoments, birthday_job, birthday_window, check_referrer, dormant_plan, referral_id, welcome_id,
)
from engine.clock import DAY_MS, ManualClock
from engine.config import ConfigError, holiday_day
from engine.errors import InvalidInput
from engine.jobs import jobs_key, shard_of
from engine.members import MemberStore
from engine.outreach import outbox_key
from engine.scheduler import Scheduler

SHANGHAI = ZoneInfo("Asia/Shanghai")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_a_birthdays_window_is_its_day_week_or_month_in_the_programmes_zone() -> None:
    assert birthday_window("03-21", "day", 2027, SHANGHAI) == (ms("2027-03-21T00:00+08:00"), ms("2027-03-22T00:00+08:00"))
    # 2027-03-21 is a Sunday: its week starts on Monday the 15th
    assert birthday_window("03-21", "week", 2027, SHANGHAI) == (ms("2027-03-15T00:00+08:00"), ms("2027-03-22T00:00+08:00"))
    assert birthday_window("12-31", "month", 2027, SHANGHAI) == (ms("2027-12-01T00:00+08:00"), ms("2028-01-01T00:00+08:00"))
    # 29 February: the 28th in a common year, the 29th in a leap year
    assert birthday_window("02-29", "day", 2027, SHANGHAI)[0] == ms("2027-02-28T00:00+08:00")
    assert birthday_window("02-29", "day", 2028, SHANGHAI)[0] == ms("2028-02-29T00:00+08:00")


def test_the_next_birthday_job_is_this_years_until_its_window_ends() -> None:
    before = ms("2027-03-01T12:00+08:00")
    assert birthday_job("m-1", "03-21", "day", before, SHANGHAI) == ("rk:birthday:m-1:2027", ms("2027-03-21T00:00+08:00"))
    during = ms("2027-03-21T18:00+08:00")  # set on the day itself: due at once (its start is past)
    assert birthday_job("m-1", "03-21", "day", during, SHANGHAI) == ("rk:birthday:m-1:2027", ms("2027-03-21T00:00+08:00"))
    after = ms("2027-03-22T00:00+08:00")
    assert birthday_job("m-1", "03-21", "day", after, SHANGHAI) == ("rk:birthday:m-1:2028", ms("2028-03-21T00:00+08:00"))


def test_a_referral_that_closes_a_loop_is_refused() -> None:
    check_referrer("c", "b", {"b": "a", "a": None})  # c -> b -> a: fine
    with pytest.raises(InvalidInput) as refused:
        check_referrer("a", "b", {"b": "c", "c": "a"})  # a -> b -> c -> a
    assert refused.value.field == "referrer"
    check_referrer("d", "b", {"b": "c", "c": "b"})  # a loop above, not d's to close


def test_holiday_days_are_real_days() -> None:
    assert holiday_day("11-11") == "1111" and holiday_day("2027-02-06") == "20270206" and holiday_day("02-29") == "0229"
    assert holiday_day("02-30") is None and holiday_day("2027-02-29") is None and holiday_day("11/11") is None


BASE = """
[program]
name = "care"
timezone = "Asia/Shanghai"

[events.purchase]
fields.amount = { type = "int", min = 1 }

[events.join]

[[tiers]]
id = "base"
name = "Base"
xp = 0

[catalog.gift]
title = "A gift"
value_cents = 100
valid_days = 30
"""

CARE = """
[care]
join_event = "join"

[care.welcome]
title = "Welcome"
rewards = { points = 100 }

[care.purchases]
event = "purchase"
at."1" = { title = "First order", rewards = { points = 10 } }
at."3" = { title = "Third order", rewards = { coupons = ["gift"] } }

[care.birthday]
title = "Happy birthday"
rewards = { points = 500 }

[care.holidays.double-11]
title = "Double 11"
days = ["11-11"]
event = "purchase"
rewards = { points = 11 }

[care.referral.on_join]
title = "Your friend joined"
rewards = { points = 20 }

[care.referral.on_first_purchase]
title = "Your friend's first order"
rewards = { points = 30 }
"""


def test_the_programme_checks_its_care_moments(compile_toml: Any) -> None:
    broken = (BASE + CARE).replace('join_event = "join"', 'join_event = "signup"').replace('days = ["11-11"]', 'days = ["11-31"]')
    broken = broken.replace('at."3"', 'at."03"').replace('coupons = ["gift"]', 'coupons = ["gfit"]')
    with pytest.raises(ConfigError) as caught:
        compile_toml(broken)
    problems = {p.path: p.reason for p in caught.value.problems}
    assert problems["care.join_event"] == "no event type 'signup' is declared under [events]"
    assert problems["care.holidays.double-11.days[0]"].startswith("'11-31' is not a day")
    assert problems["care.purchases.at.03"].startswith("must be a purchase count")
    assert problems["care.purchases.at.03.rewards.coupons[0]"] == "no catalog item 'gfit'"
    without_first = (BASE + CARE).replace('at."1" = { title = "First order", rewards = { points = 10 } }\n', "")
    with pytest.raises(ConfigError) as caught:
        compile_toml(without_first)
    assert [p.path for p in caught.value.problems] == ["care.referral.first_purchase_quest"]


def test_care_moments_compile_to_quests_the_award_path_grants(compile_toml: Any) -> None:
    program = compile_toml(BASE + CARE)
    quests = {q.id: q for q in program.quests_by_event["purchase"]}
    assert [q for q in quests] == ["care.purchase.1", "care.purchase.3", "care.holiday.double-11"]
    assert quests["care.purchase.3"].target == 3 and quests["care.holiday.double-11"].days == frozenset({"1111"})
    assert program.care_events == frozenset({"join", "purchase"})


def care_of(e: Any) -> CareMoments:
    return CareMoments(e.pipeline, e.keys, e.store, MemberStore(e.redis, e.keys, runner=e.pipeline))


def test_a_welcome_and_the_referrers_gifts_are_granted_once(engine: Any, compile_toml: Any) -> None:
    """joined_at written twice and the join event: one welcome; the referrer's join gift once; the
    invitee's first purchase gives the referrer its gift once, the second purchase nothing more."""

    async def run() -> None:
        async with engine(program_=compile_toml(BASE + CARE)) as e:
            care = care_of(e)
            fields = {"joined_at_ms": str(e.now_ms), "referrer": "r-1"}
            for _ in range(2):
                before = await care.check_profile("m-1", fields)
                await MemberStore(e.redis, e.keys).put_profile("m-1", type("P", (), {"fields": fields})())  # type: ignore[arg-type]
                await care.after_profile(e.program, "m-1", fields, before, e.now_ms)
            join = await e.apply("join-1", "m-1", "join")
            await care.after_events(e.program, [(parse(e, "join-1", "m-1", "join"), join)], e.now_ms)
            assert await e.balance("m-1") == 100 and await e.balance("r-1") == 20
            for n in (1, 2):
                result = await e.apply(f"order-{n}", "m-1", "purchase", {"amount": 100})
                await care.after_events(e.program, [(parse(e, f"order-{n}", "m-1", "purchase", {"amount": 100}), result)],
                                        e.now_ms)
            assert await e.balance("m-1") == 110 and await e.balance("r-1") == 50
            assert await dedupe_has(e, "m-1", welcome_id("m-1")) and await dedupe_has(e, "r-1", referral_id("r-1", "join", "m-1"))

    asyncio.run(run())


def test_a_referrer_that_would_close_a_loop_or_change_is_refused(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=compile_toml(BASE + CARE)) as e:
            care, store = care_of(e), MemberStore(e.redis, e.keys)
            for member, referrer in (("b", "a"), ("c", "b")):
                fields = {"referrer": referrer}
                await care.check_profile(member, fields)
                await store.put_profile(member, type("P", (), {"fields": fields})())  # type: ignore[arg-type]
            with pytest.raises(InvalidInput) as refused:
                await care.check_profile("a", {"referrer": "c"})  # a -> c -> b -> a
            assert refused.value.field == "referrer" and "loop" in refused.value.message
            with pytest.raises(InvalidInput) as refused:
                await care.check_profile("c", {"referrer": "x"})
            assert refused.value.field == "referrer" and "cannot change" in refused.value.message
            await care.check_profile("c", {"referrer": "b"})  # the same again: fine

    asyncio.run(run())


def test_a_birthday_is_granted_once_a_year_however_often_it_changes(engine: Any, compile_toml: Any) -> None:
    """The birthday set, then changed the day before: one job for the year, one gift; the job
    schedules next year's; run again, nothing more."""

    told = CARE.replace('title = "Happy birthday"', 'title = "Happy birthday"\noutreach = true')
    hooks = '\n[webhooks]\nurl = "http://127.0.0.1:9/hooks"\n'

    async def run() -> None:
        async with engine(program_=compile_toml(BASE + told + hooks)) as e:
            care = care_of(e)
            today = datetime.fromtimestamp(e.now_ms / 1000, SHANGHAI)
            tomorrow = datetime.fromtimestamp((e.now_ms + DAY_MS) / 1000, SHANGHAI)
            if tomorrow.year != today.year:
                pytest.skip("on 31 December, tomorrow's birthday is next year's occasion: this test needs one year")
            for day in (tomorrow, today):  # set for tomorrow, then changed to today
                fields = {"birthday": day.strftime("%m-%d")}
                await care.after_profile(e.program, "m-1", fields, await care.check_profile("m-1", fields), e.now_ms)
                await MemberStore(e.redis, e.keys).put_profile("m-1", type("P", (), {"fields": fields})())  # type: ignore[arg-type]
            shard = jobs_key(e.keys, shard_of("m-1"))
            assert [j.decode() for j in await e.redis.zrange(shard, 0, -1)] == [f"rk:birthday:m-1:{today.year}"]
            for at in (e.now_ms, e.now_ms + 2 * DAY_MS):
                scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(at), lambda: e.program,
                                      tasks={BIRTHDAY: care.birthday_task()})
                await scheduler.run_due()
                await scheduler.stop()
            assert await e.balance("m-1") == 500
            waiting = [j.decode() for j in await e.redis.zrange(shard, 0, -1)]
            # next year's birthday, and the webhook's delivery (outreach = true), once
            assert waiting[0] == f"rk:birthday:m-1:{today.year + 1}" or waiting[1] == f"rk:birthday:m-1:{today.year + 1}"
            assert len(waiting) == 2 and sum(j.startswith("rk:webhook:m-1:") for j in waiting) == 1
            assert await e.redis.hlen(outbox_key(e.keys, shard_of("m-1"))) == 1

    asyncio.run(run())


def parse(e: Any, event_id: str, member: str, type_: str, data: dict[str, Any] | None = None) -> Any:
    from engine.events import parse_event

    return parse_event({"id": event_id, "member": member, "type": type_, "data": data or {}}, e.program, e.now_ms)


async def dedupe_has(e: Any, member: str, op_id: str) -> bool:
    from engine.verify import step_applied

    return await step_applied(e.redis, e.keys, member, op_id, e.now_ms)


DORMANCY = """
[rules.buy]
event = "purchase"
grant = "xp"
fixed = 1

[care.dormancy]
after_days = 30
title = "We miss you"
return_event = "purchase"
wake_up = { title = "Welcome back", rewards = { points = 77 } }
"""


def test_dormancy_is_pushed_later_by_activity_marked_once_and_ended_by_a_return(engine: Any, compile_toml: Any) -> None:
    """A purchase schedules the member's dormancy job 30 days on; activity on day 10 makes it move
    itself to day 40; then the member is marked dormant (once, however often the job runs); a
    care grant (the engine's own operation) is no activity; the purchase on day 45 is the return:
    the wake-up gift, once, the mark gone, the job scheduled anew."""

    async def run() -> None:
        async with engine(program_=compile_toml(BASE + DORMANCY)) as e:
            care = care_of(e)
            shard = jobs_key(e.keys, shard_of("m-1"))
            job = "rk:dormancy:m-1:0"

            async def tick(at_ms: int) -> None:
                scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(at_ms), lambda: e.program,
                                      tasks={"dormancy": care.dormancy_task()})
                await scheduler.run_due()
                await scheduler.stop()

            async def profile(*fields: str) -> list[Any]:
                return await MemberStore(e.redis, e.keys).profile_fields("m-1", list(fields))

            day = DAY_MS
            await e.apply("order-1", "m-1", "purchase", {"amount": 100})
            assert await e.redis.zscore(shard, job) == e.now_ms + 30 * day
            await e.apply("order-2", "m-1", "purchase", {"amount": 100}, now_ms=e.now_ms + 10 * day)
            await tick(e.now_ms + 30 * day)
            assert await e.redis.zscore(shard, job) == e.now_ms + 40 * day  # moved by the activity of day 10
            assert await profile("dm") == [None]
            for at in (e.now_ms + 40 * day, e.now_ms + 41 * day):
                await tick(at)
            assert await profile("dm", "la") == [str(e.now_ms + 10 * day), str(e.now_ms + 10 * day)]
            assert await e.redis.zscore(shard, job) is None  # done: the return schedules it again
            again = await e.store.apply(dormant_plan(e.program, "m-1", e.now_ms + 10 * day, e.now_ms + 42 * day), e.program)
            assert again.status.value == "duplicate"  # once a spell
            back = await e.apply("order-3", "m-1", "purchase", {"amount": 100}, now_ms=e.now_ms + 45 * day)
            assert [x["data"] for x in back.effects if x["type"] == "wake_up"] == [{"dormant_since_ms": e.now_ms + 10 * day}]
            assert await e.balance("m-1") == 77 and await profile("dm") == [None]
            assert await e.redis.zscore(shard, job) == e.now_ms + 75 * day
            later = await e.apply("order-4", "m-1", "purchase", {"amount": 100}, now_ms=e.now_ms + 46 * day)
            assert "wake_up" not in [x["type"] for x in later.effects] and await e.balance("m-1") == 77

    asyncio.run(run())


EXPIRING = """
[points]
expiry = "days"
expiry_days = 30

[rules.buy_points]
event = "purchase"
grant = "points"
per = { field = "amount", every = 100, amount = 1 }

[care.points_expiring]
days_before = 7
title = "Your points expire in 7 days"
outreach = true

[webhooks]
url = "http://127.0.0.1:9/hooks"
"""


def test_a_notice_goes_out_before_points_expire_unless_they_are_spent(engine: Any, compile_toml: Any) -> None:
    """A purchase's lot gets its expire job and, in the same call, its notice 7 days before; the
    notice says the points left (on the feed and to the outbox), once; a member who spent them
    all by then hears nothing."""

    async def run() -> None:
        async with engine(program_=compile_toml(BASE + EXPIRING)) as e:
            care = care_of(e)
            for m in ("m-1", "m-2"):
                await e.apply(f"o-{m}", m, "purchase", {"amount": 5_000})
            shard = jobs_key(e.keys, shard_of("m-1"))
            jobs = {j.decode(): int(s) for j, s in await e.redis.zrange(shard, 0, -1, withscores=True)}
            [expiry] = [int(j.rsplit(":", 1)[1]) for j in jobs if j.startswith("rk:expire:m-1:")]
            assert jobs[f"rk:expiring:m-1:{expiry}"] == expiry - 7 * DAY_MS
            from engine.operations import Operation, fingerprint, member_plan

            spend = member_plan(e.program, Operation("spend-1", "m-2", e.now_ms, fingerprint("spend")), e.now_ms,
                                debits=([50, "checkout"],))
            assert (await e.store.apply(spend, e.program)).status.value == "applied"
            for _ in range(2):
                scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(expiry - 7 * DAY_MS),
                                      lambda: e.program, tasks={"expiring": care.expiring_task()})
                await scheduler.run_due()
                await scheduler.stop()
            import msgpack

            def notices(entries: Any) -> list[Any]:
                return [d for _, f in entries for t, d in msgpack.unpackb(f[b"d"], raw=False) if t == "care"]

            assert notices(await e.redis.xrange(e.keys.member("m-1").feed)) == [
                {"moment": "points_expiring", "title": "Your points expire in 7 days", "occasion": str(expiry), "points": 50}]
            assert notices(await e.redis.xrange(e.keys.member("m-2").feed)) == []
            assert await e.redis.hlen(outbox_key(e.keys, shard_of("m-1"))) == 1

    asyncio.run(run())


async def forget_dedupe(e: Any, member: str) -> None:
    """What the dedupe retention does to a member's ids after its days: gone."""
    async for key in e.redis.scan_iter(match=f"{e.keys.member_tag(member)}:d:*"):
        await e.redis.delete(key)


def test_a_gift_stays_once_after_its_id_has_left_the_dedupe_retention(engine: Any, compile_toml: Any) -> None:
    """Months later (the ids forgotten), the join event again and the birthday's job run again
    for the same year grant nothing more: each moment's mark in the member's state holds."""

    async def run() -> None:
        async with engine(program_=compile_toml(BASE + CARE)) as e:
            care = care_of(e)
            today = datetime.fromtimestamp(e.now_ms / 1000, SHANGHAI)
            fields = {"birthday": today.strftime("%m-%d")}
            await care.after_profile(e.program, "m-1", fields, await care.check_profile("m-1", fields), e.now_ms)
            join = await e.apply("join-1", "m-1", "join")
            await care.after_events(e.program, [(parse(e, "join-1", "m-1", "join"), join)], e.now_ms)

            async def tick() -> None:
                scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(e.now_ms), lambda: e.program,
                                      tasks={BIRTHDAY: care.birthday_task()})
                await scheduler.run_due()
                await scheduler.stop()

            await MemberStore(e.redis, e.keys).put_profile("m-1", type("P", (), {"fields": fields})())  # type: ignore[arg-type]
            await tick()
            assert await e.balance("m-1") == 100 + 500
            await forget_dedupe(e, "m-1")
            await care.after_events(e.program, [(parse(e, "join-2", "m-1", "join"), join)], e.now_ms)
            await e.redis.zadd(jobs_key(e.keys, shard_of("m-1")), {f"rk:birthday:m-1:{today.year}": e.now_ms})
            await tick()
            assert await e.balance("m-1") == 100 + 500

    asyncio.run(run())


def test_an_event_that_earns_nothing_is_activity_all_the_same(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=compile_toml(BASE)) as e:
            await e.apply("join-1", "m-1", "join")  # no rule, no quest: nothing to apply
            assert await MemberStore(e.redis, e.keys).profile_fields("m-1", ["la"]) == [str(e.now_ms)]

    asyncio.run(run())
