"""What the member script offers games, on the real server: their effects passed byte for byte,
inventory that never goes below zero, and check-in streaks held to the pure rules
(``engine/streaks.py``) over random sequences of check-ins and make-ups."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgpack
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.ids import EventId
from engine.operations import Operation, fingerprint, member_plan, pack_effect
from engine.store import OpResult, OpStatus
from engine.streaks import StreakState, check_in, make_up

SPINS = "i:lottery:spins"
THRESHOLDS = (3, 7)
MAX_AGE = 3


async def apply(e: Any, member: str, op_id: str, **parts: Any) -> OpResult:
    op = Operation(EventId(op_id), member, e.now_ms, fingerprint(op_id, repr(parts)))
    return await e.store.apply(member_plan(e.program, op, e.now_ms, **parts), e.program)


def test_a_games_effects_reach_the_feed_byte_for_byte(engine) -> None:
    """An empty map stays a map and an integer past 2^53 stays exact, in the reply, the feed
    entry and a duplicate's replay; the member's own effects still come first."""

    async def run() -> None:
        async with engine() as e:
            data = {"prize": {}, "big": 2**53 + 1, "list": [], "name": "茶"}
            result = await apply(e, "m-1", "g-1", grants=(["p", 5, "game", "", 0, 0, 0],),
                                 effects=(pack_effect("lottery_won", data),))
            # As the reply is sent: JSON (the store decodes arrays to tuples).
            assert orjson.loads(orjson.dumps(result.effects[-1])) == {"id": result.effects[-1]["id"], "type": "lottery_won", "data": data}
            assert result.effects[0]["type"] == "points"
            [(_, fields)] = await e.redis.xrange(e.keys.member("m-1").feed)
            assert msgpack.unpackb(fields[b"d"], raw=False)[-1] == ["lottery_won", data]
            again = await apply(e, "m-1", "g-1", grants=(["p", 5, "game", "", 0, 0, 0],),
                                effects=(pack_effect("lottery_won", data),))
            assert again.status is OpStatus.DUPLICATE
            assert orjson.loads(orjson.dumps(again.effects[-1]["data"])) == data

    asyncio.run(run())


def test_inventory_never_goes_below_zero_and_stops_at_its_cap(engine) -> None:
    """Grants count up to the cap (what did not fit is not counted); a debit that would go below
    zero refuses the whole operation, writing nothing, points included."""

    async def run() -> None:
        async with engine() as e:
            line = lambda delta: [SPINS, delta, 5, 0, "lottery:spins"]  # noqa: E731
            got = await apply(e, "m-1", "i-1", inventory=(line(3),))
            assert [(x["type"], x["data"]) for x in got.effects] == [
                ("inventory", {"item": "lottery:spins", "amount": 3, "count": 3})]
            capped = await apply(e, "m-1", "i-2", inventory=(line(4),))
            assert capped.effects[0]["data"] == {"item": "lottery:spins", "amount": 2, "count": 5}
            before = await e.redis.hgetall(e.keys.member("m-1").state)
            refused = await apply(e, "m-1", "i-3", grants=(["p", 5, "x", "", 0, 0, 0],), inventory=(line(-6),))
            assert (refused.status, refused.refusal, refused.refused_index) == (OpStatus.REFUSED, "insufficient_items", 0)
            assert await e.redis.hgetall(e.keys.member("m-1").state) == before
            assert await e.balance("m-1") == 0
            spent = await apply(e, "m-1", "i-4", inventory=(line(-5),))
            assert spent.effects[0]["data"] == {"item": "lottery:spins", "amount": -5, "count": 0}
            # Two lines on one item in one operation count on each other.
            both = await apply(e, "m-1", "i-5", inventory=(line(1), line(-2)))
            assert both.refusal == "insufficient_items" and both.refused_index == 1

    asyncio.run(run())


def _streak(day: int, makeup: int = 0) -> list[Any]:
    thresholds = [[t, 0, 10 * t, []] for t in THRESHOLDS]
    return ["k:daily", day, makeup, MAX_AGE, thresholds, "daily"]


# A sequence of (today, make-up day or None): days move forward by 0 to 3 at each step.
STEPS = st.lists(st.tuples(st.integers(0, 3), st.none() | st.integers(1, 4)), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(steps=STEPS)
def test_the_script_keeps_streaks_as_the_rules_say(engine, steps: list[tuple[int, int | None]]) -> None:
    """Random check-ins and make-ups: the stored state, each refusal, each streak effect and each
    threshold's reward are exactly what engine/streaks.py says."""

    async def run() -> None:
        async with engine() as e:
            member = f"m-{uuid.uuid4().hex[:8]}"  # one per example: the test's prefix is shared
            state, today = StreakState(), 20_000
            for n, (forward, back) in enumerate(steps):
                today += forward
                if back is None:
                    expected = check_in(state, today, THRESHOLDS)
                    plan = _streak(today)
                else:
                    expected = make_up(state, today - back, today, MAX_AGE, THRESHOLDS)
                    plan = _streak(today, today - back)
                result = await apply(e, member, f"s-{n}", streak=plan)
                if expected.refusal:
                    assert (result.status, result.refusal) == (OpStatus.REFUSED, expected.refusal)
                    continue
                assert result.status is OpStatus.APPLIED
                kinds = [(x["type"], x["data"]) for x in result.effects]
                if expected.state != state:
                    assert kinds[0] == ("streak", {"streak": "daily", "current": expected.state.current,
                                                   "longest": expected.state.longest,
                                                   "day": today if back is None else today - back,
                                                   "made_up": back is not None})
                rewards = [x["data"]["reason"] for x in result.effects if x["type"] == "points"]
                assert rewards == [f"streak:daily:{t}" for t in expected.rewards]
                state = expected.state
                stored = await e.redis.hget(e.keys.member(member).state, "k:daily")
                assert StreakState.unpack(stored.decode() if stored else None) == state

    asyncio.run(run())


def test_a_join_pays_no_threshold_twice() -> None:
    """Three days, a missed day, a day: the 3-day reward was paid; making up the missed day
    joins the runs into 5 and pays nothing again; two more days reach 7 and pay it."""
    s = StreakState()
    paid: list[int] = []
    for day in (1, 2, 3, 5):
        step = check_in(s, day, THRESHOLDS)
        s, paid = step.state, paid + list(step.rewards)
    assert (s.current, s.gap, paid) == (1, 4, [3])
    joined = make_up(s, 4, 5, MAX_AGE, THRESHOLDS)
    assert (joined.state.current, joined.rewards) == (5, ())
    s = joined.state
    for day in (6, 7):
        step = check_in(s, day, THRESHOLDS)
        s, paid = step.state, paid + list(step.rewards)
    assert (s.current, s.longest, paid) == (7, 7, [3, 7])
    assert make_up(s, 7, 8, MAX_AGE, THRESHOLDS).refusal == "not_missed"
    assert make_up(StreakState(), 3, 9, MAX_AGE, THRESHOLDS).refusal == "too_old"


def test_a_streak_reward_can_grant_inventory_up_to_its_cap(engine) -> None:
    """A threshold's reward may carry counted items (a make-up card at day 2): granted once, with
    an inventory effect, never past the cap."""

    async def run() -> None:
        async with engine() as e:
            card = ["i:checkin:makeup", 1, 1, 0, "checkin:makeup"]
            thresholds = [[2, 0, 0, [], [card]], [3, 0, 0, [], [card]]]
            effects = []
            for day in (100, 101, 102):
                plan = ["k:daily", day, 0, MAX_AGE, thresholds, "daily"]
                result = await apply(e, "m-1", f"c-{day}", streak=plan)
                effects.append([(x["type"], x["data"]) for x in result.effects if x["type"] == "inventory"])
            assert effects == [
                [],
                [("inventory", {"item": "checkin:makeup", "amount": 1, "count": 1})],
                [("inventory", {"item": "checkin:makeup", "amount": 0, "count": 1})],  # at its cap
            ]

    asyncio.run(run())
