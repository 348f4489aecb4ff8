"""Collect cards on the real server: draws within each card's daily budget under concurrency, the
draw chance spent once and a retry answered with the same card, pity towards the rare card that
never breaks its budget, 200 members gifting in a ring with every card conserved, a crash between
a gift's steps (in transfer, then finished by the sweep), combining exactly one set, and the split
of the pool across a restart half-way, each checked by ``rekindle verify``."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from engine.clock import ManualClock
from engine.config import item_field
from engine.crossing import CROSS, Crossing, entry_key, pack_steps
from engine.errors import Refused
from engine.members import MemberStore
from engine.operations import Operation, fingerprint, member_plan
from engine.plugins import Context
from engine.programs import ProgramRegistry
from engine.scheduler import Scheduler
from engine.store import OpStatus
from engine.verify import verify_all
from games.cards import GAME
from games.cards.plans import card_field, gift_steps
from games.cards.store import (
    SPLIT, CombineRequest, DrawRequest, GiftRequest, campaign_object, combine, draw, gift, gifts_object, holdings,
    split_job_id,
    split_task,
)
from tests.engine.test_redemptions import DUE_MS, GRACE_MS

SHANGHAI_DEADLINE = (datetime.now() + timedelta(days=3)).strftime("%Y-%m-%dT00:00:00+08:00")

CAMPAIGN = """
[program]
name = "cards"
timezone = "Asia/Shanghai"

[events.pay]
fields.cents = {{ type = "int", min = 1 }}

[[tiers]]
id = "base"
name = "Base"
xp = 0

[games.cards.fu]
title = "Collect the five fu"
deadline = "{deadline}"
pool_cents = {pool}
cents_per_point = 100
{pity}
cards = [
  {{ name = "ai", title = "Love", weight = 10, daily_budget = {common} }},
  {{ name = "he", title = "Harmony", weight = 10, daily_budget = {common} }},
  {{ name = "jing", title = "Dedication", weight = 1, daily_budget = {rare}, rare = true }},
]
{universal}
"""


def program_of(compile_toml: Any, *, common: int = 1000, rare: int = 10, pity: int | None = None, pool: int = 100_000,
               universal: bool = False, deadline: str = SHANGHAI_DEADLINE) -> Any:
    return compile_toml(CAMPAIGN.format(
        deadline=deadline, pool=pool, common=common, rare=rare, pity="" if pity is None else f"pity_draws = {pity}",
        universal='universal = { name = "wan", title = "Universal", weight = 2 }' if universal else ""))


def context_of(e: Any, now_ms: int | None = None) -> Context:
    now = e.now_ms if now_ms is None else now_ms
    crossing = Crossing(e.pipeline, e.keys, e.store, dict(GAME.objects), dict(GAME.steps), grace_ms=GRACE_MS,
                        clock=ManualClock(now))
    return Context(e.keys, e.pipeline, e.store, crossing, MemberStore(e.redis, e.keys, runner=e.pipeline), e.redis, ManualClock(now),
                   lambda: e.program)


async def give_chances(e: Any, member: str, n: int, campaign: str = "fu") -> None:
    op = Operation(f"chances-{member}-{n}", member, e.now_ms, fingerprint("test", member))
    line = [item_field(f"cards:{campaign}"), n, 0, 0, f"cards:{campaign}"]
    assert (await e.store.apply(member_plan(e.program, op, e.now_ms, inventory=(line,)), e.program)).status is OpStatus.APPLIED


async def give_cards(e: Any, member: str, cards: dict[str, int]) -> None:
    """Cards as a draw would give them: drawn for real, one chance each, until the member holds them."""
    ctx = context_of(e)
    held = Counter[str]()
    i = 0
    while any(held[c] < n for c, n in cards.items()):
        i += 1
        await give_chances_once(e, member, i)
        result = await draw(ctx, e.program, DrawRequest("fu", member, f"d-{i}", e.now_ms))
        card = next(x["data"]["card"] for x in result.effects if x["type"] == "card_drawn")
        held[card] += 1
        assert i < 10_000


async def give_chances_once(e: Any, member: str, i: int) -> None:
    op = Operation(f"chance-{member}-{i}", member, e.now_ms, fingerprint("test", member))
    line = [item_field("cards:fu"), 1, 0, 0, "cards:fu"]
    await e.store.apply(member_plan(e.program, op, e.now_ms, inventory=(line,)), e.program)


async def activate(e: Any) -> None:
    await ProgramRegistry(e.redis, e.keys, ManualClock(e.now_ms)).activate(e.program.source, origin="test")


async def verified(e: Any) -> dict[str, list[str]]:
    await activate(e)
    report = await verify_all(e.redis, e.keys)
    return {c.name: c.details for c in report.checks if c.breaches}


async def sweep(e: Any, ctx: Context, now_ms: int) -> int:
    scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(now_ms), lambda: e.program,
                          tasks={CROSS: ctx.crossing.run_job, SPLIT: split_task(ctx)})
    try:
        return await scheduler.run_due()
    finally:
        await scheduler.stop()


def drawn_card(result: Any) -> str:
    return next(x["data"]["card"] for x in result.effects if x["type"] == "card_drawn")


def test_a_draw_spends_a_chance_once_and_a_retry_is_the_same_card(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=program_of(compile_toml)) as e:
            ctx = context_of(e)
            with pytest.raises(Refused) as refused:
                await draw(ctx, e.program, DrawRequest("fu", "m-1", "d-1", e.now_ms))
            assert refused.value.code == "no_chance"
            assert await e.redis.exists(ctx.keys.object("cards", "fu") + ":e") == 0  # nothing written
            await give_chances(e, "m-1", 1)
            first = await draw(ctx, e.program, DrawRequest("fu", "m-1", "d-1", e.now_ms))
            assert first.status is OpStatus.APPLIED
            card = drawn_card(first)
            again = await draw(ctx, e.program, DrawRequest("fu", "m-1", "d-1", e.now_ms))
            assert again.status is OpStatus.DUPLICATE and drawn_card(again) == card
            held = await holdings(ctx, "fu", e.program.games["cards"].root["fu"], "m-1")
            assert held[card] == 1 and sum(held.values()) == 1
            assert await ctx.members.state_fields("m-1", [item_field("cards:fu")]) == ["0"]
            assert await verified(e) == {}

    asyncio.run(run())


def test_concurrent_draws_never_pass_a_daily_budget_and_unspent_chances_stay(engine: Any, compile_toml: Any) -> None:
    """300 draws at once on budgets of 100 + 100 + 10: exactly 210 cards given, no budget passed,
    the 90 refused no_cards_today keep their chances; the odds of what remains follow the weights."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, common=100, rare=10)) as e:
            ctx = context_of(e)
            members = [f"m-{i}" for i in range(300)]
            for m in members:
                await give_chances(e, m, 1)

            async def one(m: str) -> Any:
                try:
                    return await draw(ctx, e.program, DrawRequest("fu", m, "d-1", e.now_ms))
                except Refused as exc:
                    return exc.code

            results = await asyncio.gather(*(one(m) for m in members))
            given = Counter(drawn_card(r) for r in results if not isinstance(r, str))
            assert given == {"ai": 100, "he": 100, "jing": 10}
            assert Counter(r for r in results if isinstance(r, str)) == {"no_cards_today": 90}
            left = [m for m, r in zip(members, results) if isinstance(r, str)]
            chances = await asyncio.gather(*(ctx.members.state_fields(m, [item_field("cards:fu")]) for m in left))
            assert all(c == ["1"] for c in chances)
            assert await verified(e) == {}

    asyncio.run(run())


def test_pity_gives_the_rare_card_after_k_draws_within_its_budget(engine: Any, compile_toml: Any) -> None:
    """pity_draws = 3 and a rare card of weight 1 in 21: a member's 4th draw without a rare card is
    the rare card while its budget has room; with the budget spent, the pity waits (an ordinary
    card), and the counter keeps counting."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, pity=3, rare=1)) as e:
            ctx = context_of(e)
            await give_chances(e, "m-1", 40)
            since = 0
            rare_given = 0
            for i in range(40):
                result = await draw(ctx, e.program, DrawRequest("fu", "m-1", f"d-{i}", e.now_ms))
                data = next(x["data"] for x in result.effects if x["type"] == "card_drawn")
                assert data["pity"] == since
                if since >= 3 and rare_given == 0:
                    assert data["rare"]  # pity due, budget has room
                if data["rare"]:
                    rare_given += 1
                    since = 0
                else:
                    since += 1
            assert rare_given == 1  # the budget of one a day, never passed
            assert since >= 3  # the pity waits for a day with room
            assert await verified(e) == {}

    asyncio.run(run())


def test_200_members_gifting_in_a_ring_conserve_every_card(engine: Any, compile_toml: Any) -> None:
    """Each of 200 members gives the next a card, all at once, some twice (the retry of a gift is
    its duplicate): every member ends with the one card the previous gave; verify's conservation
    (issued == held + in transfer + consumed) is clean."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, common=10_000)) as e:
            ctx = context_of(e)
            members = [f"m-{i}" for i in range(200)]
            cards: dict[str, str] = {}
            for i, m in enumerate(members):
                await give_chances(e, m, 1)
                cards[m] = drawn_card(await draw(ctx, e.program, DrawRequest("fu", m, "d-1", e.now_ms)))

            async def give(i: int) -> Any:
                giver, receiver = members[i], members[(i + 1) % len(members)]
                request = GiftRequest("fu", giver, receiver, cards[giver], "g-1", e.now_ms)
                return [await gift(ctx, e.program, request) for _ in range(1 + i % 2)]

            results = await asyncio.gather(*(give(i) for i in range(len(members))))
            assert {r[0].status for r in results} == {OpStatus.APPLIED}
            assert {r[1].status for r in results if len(r) > 1} == {OpStatus.DUPLICATE}
            terms = e.program.games["cards"].root["fu"]
            for i, m in enumerate(members):
                held = await holdings(ctx, "fu", terms, m)
                assert {c: n for c, n in held.items() if n} == {cards[members[i - 1]]: 1}, m
            with pytest.raises(Refused) as refused:
                await gift(ctx, e.program, GiftRequest("fu", "m-0", "m-1", "jing" if cards["m-199"] != "jing" else "ai",
                                                       "g-2", e.now_ms))
            assert refused.value.code == "card_not_held"
            assert await verified(e) == {}

    asyncio.run(run())


def test_a_crash_between_a_gifts_steps_leaves_the_card_in_transfer_until_the_sweep(engine: Any, compile_toml: Any) -> None:
    """The giver's step applied, then the process died (kill -9: nothing after it ran): the card is
    with neither member, and verify counts it in transfer (clean); the sweep applies the receiver's
    step; the card is the receiver's, once."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml)) as e:
            ctx = context_of(e)
            await give_chances(e, "a", 1)
            card = drawn_card(await draw(ctx, e.program, DrawRequest("fu", "a", "d-1", e.now_ms)))
            await give_chances(e, "b", 1)
            await draw(ctx, e.program, DrawRequest("fu", "b", "d-1", e.now_ms))
            obj = gifts_object("fu", "a")
            steps = gift_steps("fu", card, "a", "b", "g-1", e.now_ms)
            reply = await ctx.crossing.open(obj, e.now_ms, ["gift", entry_key("a", "g-1"), e.now_ms, card, pack_steps(steps)])
            assert int(reply[0]) == 1
            give = GAME.steps["cards_give"].plan(e.program, steps[0], e.now_ms)
            assert (await e.store.apply(give, e.program)).status is OpStatus.APPLIED
            terms = e.program.games["cards"].root["fu"]
            assert (await holdings(ctx, "fu", terms, "a"))[card] == 0
            breaches = await verified(e)
            # An entry pending for minutes is reported by the server's real clock; the noon of the
            # test's clock may be past. What counts here: the card is in transfer, conserved.
            breaches.pop("cross-slot entries finished", None)
            assert breaches == {}
            assert await sweep(e, ctx, e.now_ms + DUE_MS) >= 1
            assert (await holdings(ctx, "fu", terms, "b"))[card] >= 1
            assert await verified(e) == {}
            retry = await gift(ctx, e.program, GiftRequest("fu", "a", "b", card, "g-1", e.now_ms))
            assert retry.status is OpStatus.DUPLICATE

    asyncio.run(run())


def test_combining_takes_exactly_one_set_once(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=program_of(compile_toml, universal=True)) as e:
            ctx = context_of(e)
            terms = e.program.games["cards"].root["fu"]
            with pytest.raises(Refused) as refused:
                await combine(ctx, e.program, CombineRequest("fu", "m-1", "c-1", e.now_ms))
            assert refused.value.code == "no_full_set"
            await give_cards(e, "m-1", {"ai": 2, "he": 1, "jing": 1})
            before = await holdings(ctx, "fu", terms, "m-1")
            result = await combine(ctx, e.program, CombineRequest("fu", "m-1", "c-1", e.now_ms))
            assert result.status is OpStatus.APPLIED
            after = await holdings(ctx, "fu", terms, "m-1")
            assert {c: before[c] - after[c] for c in before} == {"ai": 1, "he": 1, "jing": 1, "wan": 0}
            assert (await combine(ctx, e.program, CombineRequest("fu", "m-1", "c-1", e.now_ms))).status is OpStatus.DUPLICATE
            with pytest.raises(Refused) as refused:
                await combine(ctx, e.program, CombineRequest("fu", "m-1", "c-2", e.now_ms))
            assert refused.value.code in ("already_combined", "no_full_set")
            assert await verified(e) == {}

    asyncio.run(run())


class CrashingOps:
    """The operation store of a process killed after its second batch of shares was paid and before
    the split recorded it (fault injection around the real store; every write is real)."""

    def __init__(self, real: Any) -> None:
        self._real, self.calls = real, 0

    async def apply(self, plan: Any, program: Any) -> Any:
        return await self._real.apply(plan, program)

    async def apply_many(self, plans: Any, program: Any) -> Any:
        self.calls += 1
        results = await self._real.apply_many(plans, program)
        if self.calls == 2:
            raise ConnectionError("killed after paying a batch")
        return results


def test_the_split_pays_the_pool_exactly_once_across_a_restart(engine: Any, compile_toml: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """7 members combine; the pool of 1,000.01 yuan is 1,000 points (1 cent kept): 142 each and the
    6 earliest one more. The split pays in batches of 3 and dies after paying its second batch
    unrecorded; run again, it pays the rest: each member once, the shares add up to the pool."""
    import games.cards.store as store

    monkeypatch.setattr(store, "SPLIT_BATCH", 3)

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, pool=100_001)) as e:
            ctx = context_of(e)
            members = [f"m-{i}" for i in range(7)]
            for m in members:
                await give_cards(e, m, {"ai": 1, "he": 1, "jing": 1})
            for m in members:
                assert (await combine(ctx, e.program, CombineRequest("fu", m, "c-1", e.now_ms))).status is OpStatus.APPLIED
            for m in members:  # the combines' settles, gathered for the loop's turn, out and read back
                assert (await ctx.crossing.status(campaign_object("fu"), entry_key(m, "c-1"))).state.name == "SETTLED"
            terms = e.program.games["cards"].root["fu"]
            deadline = int(terms.deadline.timestamp() * 1000)
            job_id = split_job_id("fu", deadline)
            from engine.jobs import parse_job

            crashing = ctx._replace(ops=CrashingOps(e.store))
            with pytest.raises(ConnectionError):
                await split_task(crashing)(parse_job(job_id, deadline), e.program, deadline + 1)
            await split_task(ctx)(parse_job(job_id, deadline), e.program, deadline + 1)
            balances = [await e.balance(m) for m in members]
            assert balances == [143] * 6 + [142]
            assert sum(balances) == 1000
            await split_task(ctx)(parse_job(job_id, deadline), e.program, deadline + 2)  # once more: nothing more
            assert [await e.balance(m) for m in members] == balances
            assert await verified(e) == {}

    asyncio.run(run())


def test_verify_names_a_card_that_came_from_nowhere_and_a_budget_passed(engine: Any, compile_toml: Any) -> None:
    """The conservation check can fail: a card written into a member's state by hand (not drawn)
    is named with the numbers, and a day's count forged past its budget too."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, common=5)) as e:
            ctx = context_of(e)
            await give_chances(e, "m-1", 1)
            await draw(ctx, e.program, DrawRequest("fu", "m-1", "d-1", e.now_ms))
            await e.redis.hincrby(e.keys.member("m-1").state, card_field("fu", "he"), 1)
            day, _ = e.program.calendar.day(e.now_ms)
            await e.redis.hset(ctx.keys.object("cards", "fu") + ":n", mapping={f"iss:{day}:ai": 9, f"s:iss:{day}:ai": 9})
            breaches = await verified(e)
            assert any("card 'he' issued" in b for b in breaches["games' conservation across members"])
            assert any(f"card 'ai': 9 issued on {day}, budget 5" in b for b in breaches["games' own invariants"])

    asyncio.run(run())


def test_retries_are_answered_as_their_first_answer(engine: Any, compile_toml: Any) -> None:
    """A draw that took the day's last unit, retried: duplicate, the same card (not
    no_cards_today). Two draws racing for one chance: the loser's retry is no_chance again (not
    the member script's insufficient_items)."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, common=1, rare=0)) as e:
            ctx = context_of(e)
            for m in ("m-1", "m-2"):
                await give_chances(e, m, 2)
            first = await draw(ctx, e.program, DrawRequest("fu", "m-1", "d-1", e.now_ms))
            second = await draw(ctx, e.program, DrawRequest("fu", "m-2", "d-1", e.now_ms))
            assert {drawn_card(first), drawn_card(second)} == {"ai", "he"}  # the day's two units
            again = await draw(ctx, e.program, DrawRequest("fu", "m-1", "d-1", e.now_ms))
            assert again.status is OpStatus.DUPLICATE and drawn_card(again) == drawn_card(first)
            with pytest.raises(Refused) as refused:
                await draw(ctx, e.program, DrawRequest("fu", "m-1", "d-2", e.now_ms))
            assert refused.value.code == "no_cards_today"

        async with engine(program_=program_of(compile_toml)) as e:
            ctx = context_of(e)
            await give_chances(e, "m-3", 1)

            async def one(op_id: str) -> Any:
                try:
                    return await draw(ctx, e.program, DrawRequest("fu", "m-3", op_id, e.now_ms))
                except Refused as exc:
                    return exc.code

            results = await asyncio.gather(one("a"), one("b"))
            lost = [op for op, r in zip("ab", results) if isinstance(r, str) or r.status is not OpStatus.APPLIED]
            assert len(lost) == 1
            retry = await one(lost[0])
            assert retry == "no_chance" or (retry.status, retry.refusal) == (OpStatus.REFUSED, "no_chance")

    asyncio.run(run())
