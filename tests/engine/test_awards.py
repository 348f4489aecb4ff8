"""Award planning: pure, no server. What an event earns, which counters it moves, and for how long."""

from __future__ import annotations

import hashlib
import operator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.awards import AWARD_MAX, Periods, matches, plan_award
from engine.config import CompiledProgram
from engine.errors import InvalidEvent
from engine.events import parse_event
from engine.keys import DEDUPE_BUCKET_MS

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY_MS = 86_400_000
RETENTION_MS = 14 * DAY_MS
NOW_MS = 1_794_362_403_000  # Wednesday 2026-11-11T10:00:03+08:00, ISO week 2026-W46
DAY_END_MS = 1_794_412_800_000  # 2026-11-12T00:00:00+08:00
WEEK_END_MS = 1_794_758_400_000  # Monday 2026-11-16T00:00:00+08:00
WINDOW_START_MS = 1_797_004_800_000  # 2026-12-12T00:00:00+08:00
SETTINGS = settings(max_examples=25, deadline=None, database=None)


def plan(program: CompiledProgram, type_: str, data: dict[str, Any] | None = None, *, at_ms: int = NOW_MS,
         now_ms: int | None = None, event_id: str = "e-1"):
    raw = {"id": event_id, "member": "m-42", "type": type_, "data": data or {}, "at": at_ms}
    now = at_ms if now_ms is None else now_ms
    return plan_award(program, parse_event(raw, program, now), now)


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


# --- the example programme, by hand ----------------------------------------------------------


def test_purchase_of_19900_cents(program: CompiledProgram) -> None:
    """¥199.00 earns 199 XP and 199 base points (capped per local day), and moves two quests."""
    p = plan(program, "purchase", {"amount": 19900, "sku": "tea-01"})
    assert p.args.grants == (
        ["x", 199, "purchase_xp", "", 0, 0, 1],
        ["p", 199, "purchase_points", "c:purchase_points:20261111", 5000, DAY_END_MS + RETENTION_MS, 1],
    )
    assert p.args.quests == (
        ["first_order", "q:first_order:all", 1, 1, 0, 100, 100, [["free-shipping", 30 * DAY_MS]]],
        ["weekly_spend", "q:weekly_spend:2026W46", 19900, 30000, WEEK_END_MS + RETENTION_MS, 300, 0, [["weekly-10", 7 * DAY_MS]]],
    )
    assert p.args.feed_length == 500


def test_per_unit_counts_whole_units_only(program: CompiledProgram) -> None:
    """19999 cents is 199 whole yuan; 99 cents earns nothing, so no grant is planned at all."""
    assert [g[1] for g in plan(program, "purchase", {"amount": 19999}).args.grants] == [199, 199]
    assert [g[1] for g in plan(program, "purchase", {"amount": 100}).args.grants] == [1, 1]
    small = plan(program, "purchase", {"amount": 99})
    assert small.args.grants == ()
    assert [q[0] for q in small.args.quests] == ["first_order", "weekly_spend"]
    assert small.args.quests[1][2] == 99  # the weekly sum still counts every cent


def test_checkin_plan(program: CompiledProgram) -> None:
    """A check-in: 5 XP capped at 5 a local day, and the daily quest's field for that day."""
    p = plan(program, "checkin")
    assert p.args.grants == (["x", 5, "checkin_xp", "c:checkin_xp:20261111", 5, DAY_END_MS + RETENTION_MS, 1],)
    assert p.args.quests == (["daily_checkin", "q:daily_checkin:20261111", 1, 1, DAY_END_MS + RETENTION_MS, 0, 10, []],)


def test_where_filters_select_rules_and_quests(program: CompiledProgram) -> None:
    """A photo review earns the photo bonus and moves the photo quest; a plain one does neither.
    (``newcomer_review`` is planned for every review: its audience, new members, is the script's to test.)"""
    photo = plan(program, "review", {"stars": 5, "has_photo": True})
    assert [g[2] for g in photo.args.grants] == ["review_points", "photo_review_bonus", "newcomer_review"]
    assert [g[1] for g in photo.args.grants] == [20, 30, 10]
    assert photo.args.targeting[1] == ["g", 14, 0]  # the third grant (7 values each) is for an audience
    assert [q[0] for q in photo.args.quests] == ["weekly_reviews", "photo_reviewer"]
    for data in ({"stars": 5, "has_photo": False}, {"stars": 5}):
        plain = plan(program, "review", data)
        assert [g[2] for g in plain.args.grants] == ["review_points", "newcomer_review"]
        assert [q[0] for q in plain.args.quests] == ["weekly_reviews"]


def test_caps_carry_the_local_day_not_the_utc_day(program: CompiledProgram) -> None:
    """Days start at Shanghai midnight: 07:59 and 08:00 local share a day though UTC midnight lies between."""
    before_utc_midnight = plan(program, "login", at_ms=ms("2026-11-11T07:59:59.999+08:00"))
    after_utc_midnight = plan(program, "login", at_ms=ms("2026-11-11T08:00:00+08:00"))
    assert before_utc_midnight.args.grants[0][3] == after_utc_midnight.args.grants[0][3] == "c:login_xp:20261111"
    last_ms = plan(program, "login", at_ms=ms("2026-11-11T23:59:59.999+08:00"))
    next_day = plan(program, "login", at_ms=ms("2026-11-12T00:00:00+08:00"))
    assert last_ms.args.grants[0][3] == "c:login_xp:20261111"
    assert next_day.args.grants[0][3] == "c:login_xp:20261112"
    assert next_day.args.grants[0][5] == DAY_END_MS + DAY_MS + RETENTION_MS


def test_weekly_field_carries_the_iso_week(program: CompiledProgram) -> None:
    """Weeks start on local Monday; the field uses the ISO year (2027-01-01 is in 2026-W53)."""
    def week_field(iso: str) -> str:
        return plan(program, "review", {"stars": 4}, at_ms=ms(iso), now_ms=ms(iso)).args.quests[0][1]

    assert week_field("2026-11-15T23:59:59.999+08:00") == "q:weekly_reviews:2026W46"  # Sunday
    assert week_field("2026-11-16T00:00:00+08:00") == "q:weekly_reviews:2026W47"  # Monday
    assert week_field("2027-01-01T10:00:00+08:00") == "q:weekly_reviews:2026W53"
    assert week_field("2027-01-04T00:00:00+08:00") == "q:weekly_reviews:2027W01"
    assert plan(program, "review", {"stars": 4}, at_ms=ms("2027-01-01T10:00:00+08:00")).args.quests[0][4] == (
        ms("2027-01-04T00:00:00+08:00") + RETENTION_MS
    )


@pytest.mark.parametrize(
    ("iso", "amount", "inside"),
    [
        ("2026-12-11T23:59:59.999+08:00", 10_000, False),
        ("2026-12-12T00:00:00+08:00", 10_000, True),
        ("2026-12-12T23:59:59.999+08:00", 50_000, True),
        ("2026-12-12T12:00:00+08:00", 9_999, False),  # where: amount >= 10_000
        ("2026-12-13T00:00:00+08:00", 10_000, False),  # ends is exclusive
    ],
)
def test_window_quest_only_inside_its_window(program: CompiledProgram, iso: str, amount: int, inside: bool) -> None:
    """The member-day quest moves only for big orders from 12 Dec 00:00 to 13 Dec 00:00 local."""
    p = plan(program, "purchase", {"amount": amount}, at_ms=ms(iso))
    window = [q for q in p.args.quests if q[0] == "double_twelve_big_orders"]
    if inside:
        assert window == [["double_twelve_big_orders", "q:double_twelve_big_orders:all", 1, 3, 0, 0, 1000,
                           [["member-day-30", 14 * DAY_MS]]]]
    else:
        assert window == []


def test_event_time_not_arrival_time_picks_the_period(program: CompiledProgram) -> None:
    """An event posted after local midnight with `at` before it counts for the day it happened."""
    late = plan(program, "checkin", at_ms=ms("2026-11-11T23:59:00+08:00"), now_ms=ms("2026-11-12T00:01:00+08:00"))
    assert late.args.quests[0][1] == "q:daily_checkin:20261111"
    assert late.now_ms == ms("2026-11-12T00:01:00+08:00")


def test_dedupe_buckets_of_a_plan(program: CompiledProgram) -> None:
    """The event's own 7-day bucket, every bucket from now-retention to now+skew (a day's margin each side), expiry after retention."""
    p = plan(program, "purchase", {"amount": 19900}, event_id="order-9912-paid")
    assert DEDUPE_BUCKET_MS == 604_800_000
    assert p.dedupe_bucket == 2966
    assert p.lookup_buckets == (2964, 2965, 2966, 2967)
    assert p.args.dedupe_expire_ms == 1_795_737_600_000  # end of bucket 2966 + 14 days + 1 day of slack
    assert p.args.dedupe_field == hashlib.blake2b(b"order-9912-paid", digest_size=10).digest()


def test_script_arg_is_the_layout_member_lua_reads(program: CompiledProgram) -> None:
    """script_arg(): the plan's values back to back (member.lua's header): the scalars, the record,
    then each part as its count of values and the values, grants and quests spelled out flat; the
    rarer parts absent when all are empty (a check-in has none)."""
    p = plan(program, "checkin")
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(p.script_arg())
    values = list(unpacker)
    assert values[0] == b"e-1" and values[1] == p.op.fingerprint
    assert values[2:5] == [NOW_MS, p.args.dedupe_field, p.args.dedupe_expire_ms]
    assert values[6] == 500  # the feed's length
    grants_at = 14  # after ten scalars and the four values of an absent record
    assert values[10:grants_at] == [0, 0, 0, 0]
    grants = values[grants_at + 1: grants_at + 1 + values[grants_at]]
    assert grants == [b"x", 5, b"checkin_xp", b"c:checkin_xp:20261111", 5, DAY_END_MS + RETENTION_MS, 1]
    quests_at = grants_at + 1 + values[grants_at]
    quests = values[quests_at + 1: quests_at + 1 + values[quests_at]]
    # id, field, increment, target, expiry, xp, points; no coupon; no item
    assert quests == [b"daily_checkin", b"q:daily_checkin:20261111", 1, 1, DAY_END_MS + RETENTION_MS, 0, 10, 0, 0]
    assert len(values) == quests_at + 1 + values[quests_at]  # no rarer part


# --- properties of the pure rules ------------------------------------------------------------

PER_UNIT = """
[program]
name = "per-unit"
timezone = "Asia/Shanghai"

[events.pay]
fields.cents = {{ type = "int", min = 0 }}

[rules.pay_points]
event = "pay"
grant = "points"
per = {{ field = "cents", every = {every}, amount = {amount} }}

[[tiers]]
id = "base"
name = "Base"
xp = 0
"""


@SETTINGS
@given(
    every=st.integers(min_value=1, max_value=100_000),
    amount=st.integers(min_value=1, max_value=1_000_000),
    cents=st.integers(min_value=0, max_value=100_000_000),
)
def test_per_unit_arithmetic(compile_toml, every: int, amount: int, cents: int) -> None:
    """A per rule grants amount for every whole `every` of the field: cents // every * amount, or nothing;
    more than AWARD_MAX from one event is refused naming the field."""
    program = compile_toml(PER_UNIT.format(every=every, amount=amount))
    expected = cents // every * amount
    if expected > AWARD_MAX:
        with pytest.raises(InvalidEvent) as info:
            plan(program, "pay", {"cents": cents})
        assert info.value.field == "data.cents"
        return
    grants = plan(program, "pay", {"cents": cents}).args.grants
    assert grants == ((["p", expected, "pay_points", "", 0, 0, 1],) if expected else ())


ORDERED = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
           "eq": operator.eq, "ne": operator.ne}

WHERE = """
[program]
name = "where"

[events.pay]
fields.cents = {{ type = "int" }}

[rules.bonus]
event = "pay"
grant = "xp"
fixed = 7
where.cents.{op} = {operand}

[[tiers]]
id = "base"
name = "Base"
xp = 0
"""


@SETTINGS
@given(
    op=st.sampled_from(sorted(ORDERED)),
    operand=st.integers(min_value=-1000, max_value=1000),
    value=st.integers(min_value=-1000, max_value=1000),
)
def test_int_where_predicates(compile_toml, op: str, operand: int, value: int) -> None:
    """A rule with where.<field>.<op> = N fires exactly when `value op N` holds."""
    program = compile_toml(WHERE.format(op=op, operand=operand))
    fired = plan(program, "pay", {"cents": value}).args.grants != ()
    assert fired == ORDERED[op](value, operand)


@SETTINGS
@given(
    members=st.frozensets(st.sampled_from(["app", "web", "store", "kiosk"]), min_size=1),
    value=st.sampled_from(["app", "web", "store", "kiosk"]),
)
def test_in_and_not_in_predicates(members: frozenset[str], value: str) -> None:
    """`in` holds exactly when the value is listed; `not_in` exactly when it is not."""
    assert matches((("channel", "in", members),), {"channel": value}) == (value in members)
    assert matches((("channel", "not_in", members),), {"channel": value}) == (value not in members)


@SETTINGS
@given(
    low=st.integers(min_value=0, max_value=100), high=st.integers(min_value=0, max_value=100),
    value=st.integers(min_value=-10, max_value=110),
)
def test_predicates_are_a_conjunction(low: int, high: int, value: int) -> None:
    """Several predicates all have to hold."""
    where = (("n", "gte", low), ("n", "lt", high))
    assert matches(where, {"n": value}) == (low <= value < high)


@pytest.mark.parametrize("op", ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in"])
def test_missing_optional_field_fails_every_test(op: str) -> None:
    """A predicate on a field the event did not send never holds, not even ne or not_in."""
    operand: object = frozenset({1}) if op in ("in", "not_in") else 1
    assert matches((("n", op, operand),), {}) is False
    assert matches((), {}) is True


def test_eq_is_type_strict() -> None:
    """eq 1 does not match true, and ne 1 holds for true: a bool is not an int here."""
    assert matches((("f", "eq", 1),), {"f": True}) is False
    assert matches((("f", "eq", True),), {"f": 1}) is False
    assert matches((("f", "ne", 1),), {"f": True}) is True
    assert matches((("f", "eq", True),), {"f": True}) is True


MIDNIGHT = datetime(2026, 11, 11, tzinfo=SHANGHAI)  # a Wednesday


def local_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


@SETTINGS
@given(
    days=st.integers(min_value=-3650, max_value=3650),
    a=st.integers(min_value=0, max_value=DAY_MS - 1),
    b=st.integers(min_value=0, max_value=DAY_MS - 1),
)
def test_day_is_stable_within_a_local_day_and_changes_at_local_midnight(program: CompiledProgram, days: int,
                                                                        a: int, b: int) -> None:
    """Any two instants of one Shanghai day share its period and end; the last ms before it does not."""
    start = MIDNIGHT + timedelta(days=days)
    start_ms, end_ms = local_ms(start), local_ms(start + timedelta(days=1))
    day_a, day_b = Periods(program, start_ms + a).day(), Periods(program, start_ms + b).day()
    assert day_a == day_b == (start.strftime("%Y%m%d"), end_ms)
    assert Periods(program, start_ms - 1).day()[0] != day_a[0]
    assert Periods(program, end_ms).day()[0] != day_a[0]


@SETTINGS
@given(
    weeks=st.integers(min_value=-520, max_value=520),
    a=st.integers(min_value=0, max_value=7 * DAY_MS - 1),
    b=st.integers(min_value=0, max_value=7 * DAY_MS - 1),
)
def test_week_is_stable_from_monday_to_sunday_local(program: CompiledProgram, weeks: int, a: int, b: int) -> None:
    """Any two instants of one local Monday-to-Sunday share the week; Sunday's last ms before does not."""
    monday = MIDNIGHT - timedelta(days=2) + timedelta(weeks=weeks)
    start_ms, end_ms = local_ms(monday), local_ms(monday + timedelta(days=7))
    year, week, _ = monday.isocalendar()
    week_a, week_b = Periods(program, start_ms + a).week(), Periods(program, start_ms + b).week()
    assert week_a == week_b == (f"{year}W{week:02d}", end_ms)
    assert Periods(program, start_ms - 1).week()[0] != week_a[0]
    assert Periods(program, end_ms).week()[0] != week_a[0]


@SETTINGS
@given(
    now_ms=st.integers(min_value=NOW_MS - 400 * DAY_MS, max_value=NOW_MS + 400 * DAY_MS),
    back=st.integers(min_value=-300_000, max_value=RETENTION_MS),
)
def test_dedupe_buckets_cover_the_whole_window(program: CompiledProgram, now_ms: int, back: int) -> None:
    """Every `at` the window admits lies in a looked-up bucket, and its entry outlives its acceptance."""
    at_ms = now_ms - back  # from now + skew back to now - retention
    p = plan(program, "checkin", at_ms=at_ms, now_ms=now_ms)
    assert p.lookup_buckets == tuple(
        range((now_ms - RETENTION_MS - DAY_MS) // DEDUPE_BUCKET_MS, (now_ms + 300_000 + DAY_MS) // DEDUPE_BUCKET_MS + 1)
    )
    assert p.dedupe_bucket == at_ms // DEDUPE_BUCKET_MS
    assert p.dedupe_bucket in p.lookup_buckets
    assert p.args.dedupe_expire_ms > at_ms + RETENTION_MS  # the last `now` that still accepts this event
