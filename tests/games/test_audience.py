"""Game campaigns for an audience (专属) on the real server: each game's member step (a flash claim, a
spin, a bargain's start, a draw, a check-in and its make-up) refuses a member outside the campaign's
audience ``not_eligible`` with nothing written (the unit, prize or card back to its object), answered
as the service answers it (409, the code, the field naming the campaign), and lets a member inside it
play; an audience naming an unknown tier is named at its key path."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest

from engine.clock import ManualClock
from engine.config import ConfigError, item_field
from engine.crossing import Crossing, ObjectRef
from engine.errors import RekindleError
from engine.jobs import jobs_key, shard_of
from engine.members import MemberStore, parse_profile
from engine.operations import Operation, fingerprint, member_plan
from engine.plugins import Answer, Context, GameCall, Route
from engine.scripts import Command
from engine.store import OpStatus
from games.bargain import GAME as BARGAIN_GAME
from games.bargain.store import object_keys, object_of
from games.cards import GAME as CARDS_GAME
from games.cards.plans import card_field, pity_field
from games.cards.store import campaign_keys
from games.checkin import GAME as CHECKIN_GAME
from games.checkin.plans import CARDS_FIELD, CARDS_ITEM, STREAK_FIELD, day_label, day_number
from games.flash import GAME as FLASH_GAME
from games.lottery import GAME as LOTTERY_GAME
from games.lottery.plans import spin_item
from realtime.errors import status_of
from realtime.routes.games import _respond
from tests.engine.test_redemptions import GRACE_MS

DEADLINE = (datetime.now() + timedelta(days=3)).strftime("%Y-%m-%dT00:00:00+08:00")
GOLD = '{ tiers = ["gold"] }'

PROGRAM = """
[program]
name = "audience"
timezone = "Asia/Shanghai"

[events.pay]
fields.cents = {{ type = "int", min = 1 }}

[rules.pay_xp]
event = "pay"
grant = "xp"
per = {{ field = "cents", every = 1, amount = 1 }}

[rules.pay_points]
event = "pay"
grant = "points"
per = {{ field = "cents", every = 1, amount = 1 }}

[[tiers]]
id = "base"
name = "Base"
xp = 0

[[tiers]]
id = "gold"
name = "Gold"
xp = 100

[catalog.voucher]
title = "A voucher"
value_cents = 3000
valid_days = 14

[games.flash.gold-sale]
title = "For Gold only"
item = "voucher"
stock = 1
price_points = 50
audience = {sale}

[games.lottery.gold-wheel]
title = "Gold's wheel"
fallback = "thanks"
audience = {wheel}

[[games.lottery.gold-wheel.prizes]]
name = "big"
title = "100 points"
probability = 1
stock = 1
rewards = {{ points = 100 }}

[[games.lottery.gold-wheel.prizes]]
name = "thanks"
title = "Thanks for playing"
probability = 0
rewards = {{ xp = 1 }}

[games.bargain.vip-teapot]
title = "A teapot, for VIPs"
item = "voucher"
price_cents = 9900
floor_cents = 100
helpers = 10
audience = {bargain}

[games.cards.gold-fu]
title = "Gold's fu"
deadline = "{deadline}"
pool_cents = 0
audience = {cards}
cards = [
  {{ name = "ai", title = "Love", weight = 1, daily_budget = 1 }},
  {{ name = "he", title = "Harmony", weight = 1, daily_budget = 0 }},
]

[games.checkin]
rewards = {{ points = 5 }}
audience = {checkin}
"""


def text_of(**audiences: str) -> str:
    given = {"sale": GOLD, "wheel": GOLD, "bargain": '{ tags = ["vip"] }', "cards": GOLD, "checkin": GOLD}
    return PROGRAM.format(deadline=DEADLINE, **{**given, **audiences})


GAMES = (FLASH_GAME, LOTTERY_GAME, BARGAIN_GAME, CARDS_GAME, CHECKIN_GAME)


def context_of(e: Any) -> Context:
    clock = ManualClock(e.now_ms)
    objects = {kind: script for game in GAMES for kind, script in game.objects.items()}
    steps = {kind: step for game in GAMES for kind, step in game.steps.items()}
    crossing = Crossing(e.pipeline, e.keys, e.store, objects, steps, grace_ms=GRACE_MS, clock=clock)
    return Context(e.keys, e.pipeline, e.store, crossing, MemberStore(e.redis, e.keys, runner=e.pipeline), e.redis,
                   clock, lambda: e.program)


def route_of(operation_id: str) -> Route:
    return next(r for game in GAMES for r in game.routes if r.operation_id == operation_id)


async def call(e: Any, ctx: Context, operation_id: str, member: str, params: dict[str, str] | None = None,
               body: Any = None) -> tuple[int, dict[str, Any]]:
    """The route as the service answers it (realtime/routes/games.py): (status, JSON body)."""
    route = route_of(operation_id)
    try:
        answer: Answer = await route.handler(GameCall(ctx, member, params or {}, body, e.program, e.now_ms))
        response = _respond(route, answer, member)
    except RekindleError as exc:
        return status_of(exc), {"error": exc.as_dict()}
    return response.status_code, orjson.loads(response.body)


def refused(answer: tuple[int, dict[str, Any]], field: str) -> None:
    status, body = answer
    assert (status, body["error"]["code"], body["error"].get("field")) == (409, "not_eligible", field), body


def applied(answer: tuple[int, dict[str, Any]]) -> None:
    status, body = answer
    assert status == 200 and body["results"][0]["status"] == "applied", body


async def pay(e: Any, member: str, cents: int) -> None:
    """Points and XP: 100 cents or more make the member Gold."""
    assert (await e.apply(f"pay-{member}", member, "pay", {"cents": cents})).status is OpStatus.APPLIED


async def give(e: Any, member: str, item: str, n: int = 1) -> None:
    """A counted item (spins, draws, make-up cards) as a rule would grant it."""
    op = Operation(f"give-{member}-{item}", member, e.now_ms, fingerprint("give", item))
    plan = member_plan(e.program, op, e.now_ms, inventory=([item_field(item), n, 0, 0, item],))
    assert (await e.store.apply(plan, e.program)).status is OpStatus.APPLIED


async def counters(e: Any, obj: ObjectRef) -> dict[str, int]:
    keys = obj.keys(e.keys)
    await e.pipeline.call(Command("EXISTS"), [keys[0]], [])  # the unawaited settles are in
    return {k.decode(): int(v) for k, v in (await e.redis.hgetall(keys[1])).items() if not k.startswith(b"#")}


async def state(e: Any, member: str, fields: list[str]) -> list[str | None]:
    return [v.decode() if v is not None else None for v in await e.redis.hmget(e.keys.member(member).state, fields)]


def test_a_flash_sale_for_gold_refuses_others_and_keeps_its_unit(engine: Any, compile_toml: Any) -> None:
    """A sale of 1 for Gold: a Base member with the points is refused (409 not_eligible, field sale;
    a retry alike), nothing paid or granted, the unit back in the sale; a Gold member then wins it."""

    async def run() -> None:
        async with engine(program_=compile_toml(text_of())) as e:
            ctx = context_of(e)
            await pay(e, "base", 99)
            await pay(e, "gold", 100)
            sale = {"sale": "gold-sale"}
            refused(await call(e, ctx, "claimFlashSale", "base", sale, {"id": "c-1"}), "sale")
            refused(await call(e, ctx, "claimFlashSale", "base", sale, {"id": "c-1"}), "sale")
            assert await e.balance("base") == 99 and await e.coupons("base") == []
            assert (await counters(e, ObjectRef("flash", "gold-sale"))).get("sold", 0) == 0
            status, view = await call(e, ctx, "getFlashSale", "base", sale)
            assert (status, view["left"], view["state"]) == (200, 1, "open")
            applied(await call(e, ctx, "claimFlashSale", "gold", sale, {"id": "c-1"}))
            assert await e.balance("gold") == 50 and await e.coupons("gold") == ["voucher"]
            assert (await call(e, ctx, "getFlashSale", "gold", sale))[1]["left"] == 0
            # The snapshot shows the sale to its audience alone: a claim by anyone else is refused.
            program = e.program
            assert "gold-sale" not in (await FLASH_GAME.snapshot(ctx, program, "base") or {})
            assert "gold-sale" in (await FLASH_GAME.snapshot(ctx, program, "gold") or {})

    asyncio.run(run())


def test_a_wheel_for_gold_refuses_others_keeping_the_spin_and_the_prize(engine: Any, compile_toml: Any) -> None:
    """Every spin draws the one 100-point prize (stock 1): a Base member holding a spin is refused
    (field wheel), the spin kept and the prize back to the wheel; a Gold member then wins it."""

    async def run() -> None:
        async with engine(program_=compile_toml(text_of())) as e:
            ctx = context_of(e)
            await pay(e, "base", 99)
            await pay(e, "gold", 100)
            spins = item_field(spin_item("gold-wheel"))
            for member in ("base", "gold"):
                await give(e, member, spin_item("gold-wheel"))
            wheel = {"wheel": "gold-wheel"}
            refused(await call(e, ctx, "spinWheel", "base", wheel, {"id": "s-1"}), "wheel")
            assert await state(e, "base", [spins]) == ["1"] and await e.balance("base") == 99
            assert (await counters(e, ObjectRef("lottery", "gold-wheel"))).get("given:big", 0) == 0
            applied(await call(e, ctx, "spinWheel", "gold", wheel, {"id": "s-1"}))
            assert int((await state(e, "gold", [spins]))[0] or 0) == 0
            assert await e.balance("gold") == 200
            assert (await counters(e, ObjectRef("lottery", "gold-wheel")))["given:big"] == 1

    asyncio.run(run())


def test_a_bargain_for_vips_is_started_by_vips_only_and_helped_by_anyone(engine: Any, compile_toml: Any) -> None:
    """A member without the tag cannot start one (field campaign; no round, no close job); a VIP
    can, and the member refused may still help it."""

    async def run() -> None:
        async with engine(program_=compile_toml(text_of())) as e:
            ctx = context_of(e)
            await ctx.members.put_profile("vip", parse_profile({"tags": ["vip"]}, "vip"))
            await ctx.members.put_profile("plain", parse_profile({"tags": ["regular"]}, "plain"))
            body = {"campaign": "vip-teapot"}
            refused(await call(e, ctx, "startBargain", "plain", None, body), "campaign")
            refused(await call(e, ctx, "startBargain", "nobody", None, body), "campaign")  # no profile at all
            for owner in ("plain", "nobody"):
                obj = object_of("vip-teapot", owner)
                assert await e.redis.hgetall(object_keys(ctx, obj)[3]) == {}  # no round
                assert await e.redis.zcard(jobs_key(ctx.keys, shard_of(obj.id))) == 0  # no close job
            status, started = await call(e, ctx, "startBargain", "vip", None, body)
            assert (status, started["id"], started["state"]) == (201, "vip-teapot.1.vip", "open")
            applied(await call(e, ctx, "helpBargain", "plain", {"bargain": started["id"]}, {"id": "h-1"}))

            # The campaigns a member may start: listed to VIPs only, and to a VIP who left the
            # audience with a bargain of it (their own stays readable), as not eligible.
            def listed(answer: tuple[int, dict[str, Any]]) -> dict[str, Any]:
                assert answer[0] == 200, answer
                return {c["campaign"]: c for c in answer[1]["campaigns"]}

            assert "vip-teapot" not in listed(await call(e, ctx, "listBargainCampaigns", "plain"))
            mine = listed(await call(e, ctx, "listBargainCampaigns", "vip"))["vip-teapot"]
            assert (mine["eligible"], mine["bargain"], mine["state"]) == (True, "vip-teapot.1.vip", "open")
            await ctx.members.put_profile("vip", parse_profile({"tags": ["regular"]}, "vip"))
            mine = listed(await call(e, ctx, "listBargainCampaigns", "vip"))["vip-teapot"]
            assert (mine["eligible"], mine["bargain"]) == (False, "vip-teapot.1.vip")

    asyncio.run(run())


def test_draws_for_gold_refuse_others_keeping_the_chance_and_the_card(engine: Any, compile_toml: Any) -> None:
    """One card a day can be issued: a Base member's draw is refused (field campaign), the chance
    kept, no card, no pity counted, nothing issued; a Gold member's draw then gets the card."""

    async def run() -> None:
        async with engine(program_=compile_toml(text_of())) as e:
            ctx = context_of(e)
            await pay(e, "base", 99)
            await pay(e, "gold", 100)
            for member in ("base", "gold"):
                await give(e, member, "cards:gold-fu")
            fields = [item_field("cards:gold-fu"), card_field("gold-fu", "ai"), pity_field("gold-fu")]
            campaign = {"campaign": "gold-fu"}
            refused(await call(e, ctx, "drawCard", "base", campaign, {"id": "d-1"}), "campaign")
            assert await state(e, "base", fields) == ["1", None, None]
            await e.pipeline.call(Command("EXISTS"), [campaign_keys(ctx, "gold-fu")[0]], [])
            issued = await e.redis.hgetall(campaign_keys(ctx, "gold-fu")[1])
            assert all(int(v) == 0 for k, v in issued.items() if k.startswith(b"iss:")), issued
            applied(await call(e, ctx, "drawCard", "gold", campaign, {"id": "d-1"}))
            assert (await state(e, "gold", fields))[1] == "1"

    asyncio.run(run())


def test_checkin_for_gold_refuses_others_checkins_and_makeups(engine: Any, compile_toml: Any) -> None:
    """A Base member's check-in and make-up are refused (field checkin) with no streak, points or
    card moved; a Gold member checks in."""

    async def run() -> None:
        async with engine(program_=compile_toml(text_of())) as e:
            ctx = context_of(e)
            await pay(e, "base", 99)
            await pay(e, "gold", 100)
            await give(e, "base", CARDS_ITEM)
            refused(await call(e, ctx, "checkIn", "base"), "checkin")
            yesterday = day_label(day_number(e.program.tz, e.now_ms) - 1)
            refused(await call(e, ctx, "checkIn", "base", None, {"makeup": yesterday}), "checkin")
            assert await state(e, "base", [STREAK_FIELD, CARDS_FIELD]) == [None, "1"]
            assert await e.balance("base") == 99
            applied(await call(e, ctx, "checkIn", "gold"))
            assert await e.balance("gold") == 105 and (await state(e, "gold", [STREAK_FIELD]))[0] is not None

    asyncio.run(run())


@pytest.mark.parametrize(("key", "path"), [
    ("sale", "games.flash.gold-sale.audience.tiers[0]"),
    ("wheel", "games.lottery.gold-wheel.audience.tiers[0]"),
    ("bargain", "games.bargain.vip-teapot.audience.tiers[0]"),
    ("cards", "games.cards.gold-fu.audience.tiers[0]"),
    ("checkin", "games.checkin.audience.tiers[0]"),
])
def test_an_audience_naming_an_unknown_tier_is_named_at_its_key_path(compile_toml: Any, key: str, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_toml(text_of(**{key: '{ tiers = ["platinum"] }'}))
    assert {p.path: p.reason for p in caught.value.problems} == {path: "no tier 'platinum' under [[tiers]]"}
