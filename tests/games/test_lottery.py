"""The lottery wheel: its rules as properties (the draw has exactly the published odds; a stock
released over the day never runs ahead or past itself), its checks, and on the real server: 500
concurrent spins never give past the budget or a stock, a hit on a prize out of stock is the
fallback, a spin costs a spin (none left: refused, the prize back to the wheel), a retry is the
same prize, and the seam's sweep finishes a spin whose process died."""

from __future__ import annotations

from engine.clock import ManualClock

import asyncio
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import ConfigError, item_field
from engine.crossing import CROSS, Crossing, ObjectRef, entry_key, pack_steps
from engine.ledger import verify
from engine.operations import Operation, fingerprint, member_plan
from engine.store import OpStatus
from engine.verify import verify_all
from games.lottery import GAME
from games.lottery.config import PPM
from games.lottery.plans import LOTTERY, SpinStep, spin_item, spin_step
from games.lottery.rules import draw, expected_cost, released
from games.lottery.store import Spin, spin
from tests.engine.test_redemptions import DUE_MS, GRACE_MS

WHEEL = """
[program]
name = "wheel"
timezone = "Asia/Shanghai"

[events.pay]
fields.cents = {{ type = "int", min = 1 }}

[[tiers]]
id = "base"
name = "Base"
xp = 0

[catalog.voucher]
title = "A voucher"
value_cents = 3000
valid_days = 14

[games.lottery.daily]
title = "Daily wheel"
fallback = "thanks"
{wheel}

[[games.lottery.daily.prizes]]
name = "big"
title = "100 points"
probability = 0.1
cost = 100
{big_stock}
rewards = {{ points = 100 }}

[[games.lottery.daily.prizes]]
name = "voucher"
title = "A voucher"
probability = 0.2
cost = 30
rewards = {{ coupons = ["voucher"] }}

[[games.lottery.daily.prizes]]
name = "thanks"
title = "Thanks for playing"
probability = 0.7
rewards = {{ xp = 1 }}
"""


def program_of(compile_toml: Any, wheel: str = "", big_stock: str = "stock = 5") -> Any:
    return compile_toml(WHEEL.format(wheel=wheel, big_stock=big_stock))


# --- rules ---------------------------------------------------------------------------------------


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=8).filter(lambda odds: sum(odds) > 0))
def test_the_draw_lands_on_each_prize_exactly_its_share(odds: list[int]) -> None:
    """Over every value of u, prize i is drawn exactly odds[i] times: the published odds, no bias."""
    counts = Counter(draw(odds, u) for u in range(sum(odds)))
    assert [counts.get(i, 0) for i in range(len(odds))] == odds


def test_a_draw_outside_its_range_is_refused() -> None:
    with pytest.raises(ValueError):
        draw([1, 2], 3)


@given(st.integers(0, 10_000), st.integers(1, 10**8), st.integers(-10**8, 2 * 10**8), st.integers(0, 10**8))
def test_a_stock_released_over_the_day_never_runs_ahead_or_backwards(stock: int, span: int, now: int, later: int) -> None:
    start, end = 1_000, 1_000 + span
    a, b = released(stock, start, end, now), released(stock, start, end, now + later)
    assert 0 <= a <= b <= stock  # monotone, within the stock
    assert released(stock, start, end, end) == stock  # all of it by the day's end
    if now >= start:
        assert a * span >= stock * min(now - start, span)  # never behind the even line (rounded up)


def test_the_expected_cost_counts_a_stock_as_its_ceiling(compile_toml: Any) -> None:
    wheel = program_of(compile_toml).games[LOTTERY].root["daily"]
    # 1,000 spins: big 100 hits expected but only 5 in stock (5 x 100); voucher 200 x 30.
    assert expected_cost(wheel, 1_000) == 5 * 100 + 200 * 30


def problems(compile_toml: Any, toml: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        compile_toml(toml)
    return {p.path: p.reason for p in caught.value.problems}


def test_check_refuses_a_wheel_that_cannot_work(compile_toml: Any) -> None:
    """Odds not adding to 1, a limited fallback, a budget the expected spins overrun: each named
    with its key path, and the budget's with the numbers."""
    bad = WHEEL.format(wheel="budget = 1000\nexpected_spins = 1000", big_stock="stock = 5")
    found = problems(compile_toml, bad)
    assert found["games.lottery.daily.budget"] == (
        "the expected cost of 1,000 expected spins is 6,500.00 (each prize's odds x spins, up to its stock, x its "
        "cost), more than the budget of 1,000")
    odd = WHEEL.format(wheel="", big_stock="stock = 5").replace("probability = 0.7", "probability = 0.6")
    assert problems(compile_toml, odd)["games.lottery.daily.prizes"] == "the probabilities add up to 0.9, not 1"
    limited = WHEEL.format(wheel="", big_stock="").replace('rewards = {{ xp = 1 }}'.replace("{{", "{").replace("}}", "}"),
                                                           "stock = 3\nrewards = { xp = 1 }")
    assert "must be unlimited" in problems(compile_toml, limited)["games.lottery.daily.fallback"]
    fine = problems(compile_toml, WHEEL.format(wheel="", big_stock="").replace("probability = 0.1", "probability = 0.1234567"))
    assert fine == {"games.lottery.daily.prizes[0].probability": "must have at most six decimals "
                                                                  "(odds are kept in parts per million)"}


# --- on the real server --------------------------------------------------------------------------


def crossing_of(e: Any) -> Crossing:
    return Crossing(e.pipeline, e.keys, e.store, dict(GAME.objects), {LOTTERY: SpinStep()}, grace_ms=GRACE_MS,
                    clock=ManualClock(e.now_ms))


async def give_spins(e: Any, member: str, n: int) -> None:
    """Spins as a rule would grant them: an inventory line through the member script."""
    op = Operation(f"spins-{member}-{n}", member, e.now_ms, fingerprint("spins", n))
    plan = member_plan(e.program, op, e.now_ms, inventory=([item_field(spin_item("daily")), n, 0, 0, spin_item("daily")],))
    assert (await e.store.apply(plan, e.program)).status is OpStatus.APPLIED


async def spins_left(e: Any, member: str) -> int:
    return int(await e.redis.hget(e.keys.member(member).state, item_field(spin_item("daily"))) or 0)


async def counters(e: Any) -> dict[str, int]:
    from engine.scripts import Command

    keys = ObjectRef(LOTTERY, "daily").keys(e.keys)
    await e.pipeline.call(Command("EXISTS"), [keys[0]], [])  # the unawaited settles are in
    return {k.decode(): int(v) for k, v in (await e.redis.hgetall(keys[1])).items() if not k.startswith(b"#")}


async def spin_once(e: Any, crossing: Crossing, member: str, op_id: str, prize: str, now_ms: int | None = None) -> Any:
    wheel = e.program.games[LOTTERY].root["daily"]
    drawn = wheel.prize(prize)
    return await spin(crossing, e.program, wheel, Spin("daily", member, op_id, e.now_ms if now_ms is None else now_ms,
                                                       drawn, -1 if drawn.stock is None else drawn.stock))


def prize_of(result: Any) -> tuple[str, bool]:
    (data,) = [e["data"] for e in result.effects if e["type"] == "prize"]
    return data["prize"], data["fallback"]


def test_500_concurrent_spins_never_exceed_the_budget_or_a_stock(engine: Any, compile_toml: Any) -> None:
    """Every spin draws the 100-point prize (stock 5, budget 450): 4 are given (the 5th would pass
    the budget), 496 get the fallback, flagged as such; counters, ledger and verify agree."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, wheel="budget = 450")) as e:
            crossing = crossing_of(e)
            members = [f"m-{i}" for i in range(500)]
            await asyncio.gather(*(give_spins(e, m, 1) for m in members))
            results = await asyncio.gather(*(spin_once(e, crossing, m, "s-1", "big") for m in members))
            assert {r.status for r in results} == {OpStatus.APPLIED}
            prizes = Counter(prize_of(r) for r in results)
            assert prizes == {("big", False): 4, ("thanks", True): 496}
            assert await counters(e) == {"given:big": 4, "s:given:big": 4, "spent": 400, "s:spent": 400,
                                         "given:thanks": 496, "s:given:thanks": 496}
            assert sorted([m for m in members if await e.balance(m) == 100]) == sorted(
                m for m, r in zip(members, results) if prize_of(r)[0] == "big")
            assert all([await spins_left(e, m) == 0 for m in members])
            assert (await verify(e.redis, e.keys)).ok
            report = await verify_all(e.redis, e.keys)
            assert report.ok, report.table()

    asyncio.run(run())


def test_a_spin_without_a_spin_left_is_refused_and_gives_the_prize_back(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=program_of(compile_toml, big_stock="stock = 1")) as e:
            crossing = crossing_of(e)
            refused = await spin_once(e, crossing, "none", "s-1", "big")
            assert (refused.status, refused.refusal) == (OpStatus.REFUSED, "insufficient_items")
            assert (await counters(e)).get("given:big", 0) == 0  # released: the unit is the wheel's again
            await give_spins(e, "one", 1)
            won = await spin_once(e, crossing, "one", "s-1", "big")
            assert prize_of(won) == ("big", False) and await e.balance("one") == 100

    asyncio.run(run())


def test_a_retry_is_the_same_prize_never_a_new_draw(engine: Any, compile_toml: Any) -> None:
    """The same id again answers duplicate with the first prize, whatever the new draw says."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml)) as e:
            crossing = crossing_of(e)
            await give_spins(e, "m", 2)
            first = await spin_once(e, crossing, "m", "s-1", "voucher")
            again = await spin_once(e, crossing, "m", "s-1", "big")
            assert first.status is OpStatus.APPLIED and again.status is OpStatus.DUPLICATE
            assert prize_of(again) == ("voucher", False)
            assert await spins_left(e, "m") == 1 and await e.coupons("m") == ["voucher"]
            assert await e.balance("m") == 0

    asyncio.run(run())


def test_a_spin_whose_process_died_is_finished_by_the_sweep(engine: Any, compile_toml: Any) -> None:
    """The wheel gave the prize and the process died before the member step: the seam's sweep
    (the scheduler, with the game's step kind) spends the spin and gives the prize, once."""
    from engine.clock import ManualClock
    from engine.scheduler import Scheduler

    async def run() -> None:
        async with engine(program_=program_of(compile_toml)) as e:
            crossing = crossing_of(e)
            await give_spins(e, "m", 1)
            wheel = e.program.games[LOTTERY].root["daily"]
            step = spin_step(e.program, "daily", wheel, wheel.prize("voucher"), False, "m", "s-1", e.now_ms)
            fallback = spin_step(e.program, "daily", wheel, wheel.prize("thanks"), True, "m", "s-1", e.now_ms)
            reply = await crossing.open(ObjectRef(LOTTERY, "daily"), e.now_ms, [
                "spin", entry_key("m", "s-1"), e.now_ms, "voucher", 30, -1, pack_steps([step]), "thanks", 0,
                pack_steps([fallback]), -1])
            assert int(reply[0]) == 1 and int(reply[1]) == 0
            scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(e.now_ms + DUE_MS),
                                  lambda: e.program, tasks={CROSS: crossing.run_job})
            try:
                assert await scheduler.run_due() == 1
            finally:
                await scheduler.stop()
            assert await spins_left(e, "m") == 0 and await e.coupons("m") == ["voucher"]
            assert (await counters(e))["s:given:voucher"] == 1
            again = await spin_once(e, crossing, "m", "s-1", "big")  # the client's retry, after
            assert again.status is OpStatus.DUPLICATE and prize_of(again) == ("voucher", False)

    asyncio.run(run())


def test_verify_names_a_wheel_past_its_stock_or_budget(engine: Any, compile_toml: Any) -> None:
    """The game's own invariant in rekindle verify: counts forged behind the wheel's script (and
    kept settled, so only the game's check can see them) are one breach each, named."""
    from engine.clock import ManualClock
    from engine.programs import ProgramRegistry

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, wheel="budget = 450")) as e:
            await ProgramRegistry(e.redis, e.keys, ManualClock(e.now_ms)).activate(e.program.source, origin="test")
            crossing = crossing_of(e)
            await give_spins(e, "m", 1)
            assert prize_of(await spin_once(e, crossing, "m", "s-1", "big")) == ("big", False)
            await counters(e)
            assert (await verify_all(e.redis, e.keys)).ok
            n = ObjectRef(LOTTERY, "daily").keys(e.keys)[1]
            for name, by in (("given:big", 5), ("spent", 500)):
                await e.redis.hincrby(n, name, by)
                await e.redis.hincrby(n, f"s:{name}", by)
            report = await verify_all(e.redis, e.keys)
            assert {c.name: c.details for c in report.checks if c.breaches} == {"games' own invariants": [
                "lottery:daily: 6 of prize 'big' given, stock 5", "lottery:daily: prizes costing 600 given, budget 450"]}

    asyncio.run(run())


def test_a_stock_released_over_the_day_follows_the_programmes_local_day(compile_toml: Any) -> None:
    """24 a day released evenly: at local midnight 1 (the first is there at once), by local noon
    12, by 23:59 all 24; "all" releases the whole stock at once, and no stock is unlimited (-1)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from games.lottery.routes import available

    program = program_of(compile_toml, wheel='release = "over_day"', big_stock="stock = 24")
    wheel = program.games[LOTTERY].root["daily"]

    def at(hour: int, minute: int = 0) -> int:
        return int(datetime(2026, 12, 5, hour, minute, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp() * 1000)

    assert [available(program, wheel, 24, at(h, m)) for h, m in ((0, 0), (12, 0), (23, 59))] == [1, 12, 24]
    assert available(program, wheel, None, at(12)) == -1
    assert available(program, wheel.model_copy(update={"release": "all"}), 24, at(0)) == 24
