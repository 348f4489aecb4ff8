"""Rules, quests and tiers granting counted items (a game's: the check-in's make-up cards), on the
real server: up to the item's cap and the rule's daily cap, with an ``inventory`` effect, kept by
a refund; and the programme refused, naming the key path, when it names an item no game section
of it declares or misuses ``item``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.awards import cap_field
from engine.clock import DAY_MS
from engine.config import Item, item_field, parse_program
from engine.dryrun import DryRun
from engine.errors import ConfigError
from engine.store import OpResult, OpStatus

CARDS = "checkin:makeup"
FIELD = item_field(CARDS)

BASE = """
[program]
name = "items"
timezone = "Asia/Shanghai"

[events.visit]

[events.purchase]
fields.amount = { type = "int", min = 1 }

[events.refund]
reverses = "purchase"
fields.of = { type = "str" }

[[tiers]]
id = "base"
name = "Base"
xp = 0

[games.checkin]
makeup_cards_cap = 5
"""

RULES = BASE + """
[rules.card_per_visit]
event = "visit"
grant = "item"
item = "checkin:makeup"
fixed = 1
daily_cap = 2

[rules.cards_per_purchase]
event = "purchase"
grant = "item"
item = "checkin:makeup"
per = { field = "amount", every = 100, amount = 1 }

[rules.purchase_points]
event = "purchase"
grant = "points"
per = { field = "amount", every = 100, amount = 1 }
"""


def inventory(result: OpResult) -> list[dict[str, Any]]:
    assert result.status is OpStatus.APPLIED, result
    return [dict(x["data"]) for x in result.effects if x["type"] == "inventory"]


async def cards(e: Any, member: str) -> int:
    return int(await e.redis.hget(e.keys.member(member).state, FIELD) or 0)


def test_the_programme_declares_the_items_of_its_game_sections(compile_toml) -> None:
    """``CompiledProgram.items``: the check-in's cards, with the section's cap; an item rule
    carries the item's field, cap and name, and plans the grant line member.lua reads."""
    program = compile_toml(RULES)
    assert program.items == {CARDS: Item(FIELD, 5, "make-up card")}
    rule = program.rules_by_event["visit"][0]
    assert (rule.item, rule.item_field, rule.item_cap, rule.daily_cap) == (CARDS, FIELD, 5, 2)
    assert compile_toml(BASE.replace("[games.checkin]\nmakeup_cards_cap = 5\n", "")).items == {}


def test_a_rule_grants_items_fixed_up_to_its_daily_cap(engine, compile_toml, noon_ms) -> None:
    """fixed = 1 a visit, daily_cap = 2: the third visit of the day grants nothing (no effect),
    the next local day grants again; the grant line is ["i", ...] with the rule's cap field."""

    async def run() -> None:
        async with engine(program_=compile_toml(RULES)) as e:
            plan = e.plan("v-0", "m-1", "visit")
            day = e.program.calendar.day(noon_ms)[0]
            assert [list(g) for g in plan.args.grants] == [
                ["i", 1, "card_per_visit", cap_field("card_per_visit", day), 2,
                 e.program.calendar.day(noon_ms)[1] + e.program.retention_ms, 0, FIELD, 5, CARDS]]
            assert inventory(await e.apply("v-1", "m-1", "visit")) == [{"item": CARDS, "amount": 1, "count": 1}]
            assert inventory(await e.apply("v-2", "m-1", "visit")) == [{"item": CARDS, "amount": 1, "count": 2}]
            capped = await e.apply("v-3", "m-1", "visit")
            assert capped.status is OpStatus.APPLIED and capped.effects == []
            assert await cards(e, "m-1") == 2
            tomorrow = noon_ms + DAY_MS
            next_day = await e.apply("v-4", "m-1", "visit", at=tomorrow, now_ms=tomorrow)
            assert inventory(next_day) == [{"item": CARDS, "amount": 1, "count": 3}]
            # A duplicate replays the effect and grants nothing more.
            again = await e.apply("v-4", "m-1", "visit", at=tomorrow, now_ms=tomorrow)
            assert again.status is OpStatus.DUPLICATE and await cards(e, "m-1") == 3

    asyncio.run(run())


def test_a_rule_grants_items_per_unit_up_to_the_items_cap(engine, compile_toml) -> None:
    """per 100 cents one card, beside a points rule on the same event: a grant past the cap (5)
    is cut to what fits, and at the cap the member still sees the count; points are untouched."""

    async def run() -> None:
        async with engine(program_=compile_toml(RULES)) as e:
            first = await e.apply("p-1", "m-1", "purchase", {"amount": 350})
            assert inventory(first) == [{"item": CARDS, "amount": 3, "count": 3}]
            assert [x["type"] for x in first.effects] == ["inventory", "points"]
            cut = await e.apply("p-2", "m-1", "purchase", {"amount": 400})
            assert inventory(cut) == [{"item": CARDS, "amount": 2, "count": 5}]
            full = await e.apply("p-3", "m-1", "purchase", {"amount": 100})
            assert inventory(full) == [{"item": CARDS, "amount": 0, "count": 5}]
            assert await cards(e, "m-1") == 5
            assert await e.balance("m-1") == 3 + 4 + 1
            assert await e.xp("m-1") == 0

    asyncio.run(run())


def test_a_rules_daily_cap_counts_only_the_items_the_member_got(engine, compile_toml) -> None:
    """A member at the item's cap uses none of the rule's day: once a card is spent, the visit
    after grants one again."""
    text = RULES.replace("makeup_cards_cap = 5", "makeup_cards_cap = 1")

    async def run() -> None:
        async with engine(program_=compile_toml(text)) as e:
            assert inventory(await e.apply("v-1", "m-1", "visit")) == [{"item": CARDS, "amount": 1, "count": 1}]
            assert inventory(await e.apply("v-2", "m-1", "visit")) == [{"item": CARDS, "amount": 0, "count": 1}]
            await e.redis.hset(e.keys.member("m-1").state, FIELD, 0)  # the card spent (a make-up)
            assert inventory(await e.apply("v-3", "m-1", "visit")) == [{"item": CARDS, "amount": 1, "count": 1}]
            day = e.program.calendar.day(e.now_ms)[0]
            used = await e.redis.hget(e.keys.member("m-1").state, cap_field("card_per_visit", day))
            assert int(used) == 2

    asyncio.run(run())


QUEST = BASE + """
[rules.card_per_purchase]
event = "purchase"
grant = "item"
item = "checkin:makeup"
fixed = 1

[quests.two_orders]
title = "Two orders"
kind = "once"
event = "purchase"
target = 2
rewards = { xp = 10, items = { "checkin:makeup" = 3 } }
"""


def test_a_quest_completion_grants_items_and_a_refund_keeps_them(engine, compile_toml) -> None:
    """The quest's items come with its XP, counted on top of the rule's card of the same event (one
    operation sees its own grants), cut at the cap; a refund of the completing order takes back
    the quest's XP and reopens it, but the cards stay."""

    async def run() -> None:
        async with engine(program_=compile_toml(QUEST)) as e:
            first = e.plan("o-1", "m-1", "purchase", {"amount": 100})
            assert len(first.args.quests[0]) == 9 and first.args.quests[0][8] == [[FIELD, 3, 5, 0, CARDS]]
            assert inventory(await e.apply("o-1", "m-1", "purchase", {"amount": 100})) == [
                {"item": CARDS, "amount": 1, "count": 1}]
            done = await e.apply("o-2", "m-1", "purchase", {"amount": 100})
            assert [x["type"] for x in done.effects] == ["inventory", "quest_completed", "xp", "inventory"]
            assert inventory(done) == [{"item": CARDS, "amount": 1, "count": 2}, {"item": CARDS, "amount": 3, "count": 5}]
            assert await cards(e, "m-1") == 5 and await e.xp("m-1") == 10
            refund = await e.apply("r-1", "m-1", "refund", {"of": "o-2"})
            assert refund.status is OpStatus.APPLIED
            assert {x["type"] for x in refund.effects} == {"quest_progress", "xp"}
            assert await cards(e, "m-1") == 5 and await e.xp("m-1") == 0

    asyncio.run(run())


def test_a_quest_without_items_plans_no_ninth_element(compile_toml, engine) -> None:
    """Quests that grant no items keep the eight-element step: the script unpacks nothing more."""

    async def run() -> None:
        async with engine(program_=compile_toml(QUEST.replace(', items = { "checkin:makeup" = 3 }', ""))) as e:
            plan = e.plan("o-1", "m-1", "purchase", {"amount": 100})
            assert len(plan.args.quests[0]) == 8

    asyncio.run(run())


TIERS = BASE.replace('[[tiers]]\nid = "base"\nname = "Base"\nxp = 0\n', """[[tiers]]
id = "base"
name = "Base"
xp = 0

[[tiers]]
id = "silver"
name = "Silver"
xp = 10
rewards = { points = 5, items = { "checkin:makeup" = 2 } }

[[tiers]]
id = "gold"
name = "Gold"
xp = 20
""") + """
[rules.visit_xp]
event = "visit"
grant = "xp"
fixed = 10
"""


def test_a_tier_reward_grants_items(engine, compile_toml) -> None:
    """Reaching silver grants its points and two cards; gold, with no items, grants none."""

    async def run() -> None:
        program = compile_toml(TIERS)
        async with engine(program_=program) as e:
            up = await e.apply("v-1", "m-1", "visit")
            assert [x["type"] for x in up.effects] == ["xp", "tier_up", "points", "inventory"]
            assert inventory(up) == [{"item": CARDS, "amount": 2, "count": 2}]
            gold = await e.apply("v-2", "m-1", "visit")
            assert [x["type"] for x in gold.effects] == ["xp", "tier_up"]
            assert await cards(e, "m-1") == 2 and await e.balance("m-1") == 5

    asyncio.run(run())


def test_a_dry_run_of_an_item_grant_writes_nothing(engine, compile_toml) -> None:
    async def run() -> None:
        async with engine(program_=compile_toml(RULES)) as e:
            await e.apply("p-1", "m-1", "purchase", {"amount": 100})
            would = await DryRun(e.redis, e.keys, e.scripts).apply(e.plan("p-2", "m-1", "purchase", {"amount": 200}), e.program)
            assert inventory(would) == [{"item": CARDS, "amount": 2, "count": 3}]
            assert await cards(e, "m-1") == 1

    asyncio.run(run())


# --- the programme refused ---------------------------------------------------------------------


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_program(text, "items.toml")
    return {p.path: p.reason for p in info.value.problems}


def test_an_undeclared_item_is_refused_with_its_key_path() -> None:
    """Rules, quests and tiers: each item must be declared by a game section of this programme;
    the reason lists the items that are."""
    text = TIERS.replace('rewards = { points = 5, items = { "checkin:makeup" = 2 } }',
                         'rewards = { items = { "checkin:golden" = 1 } }') + """
[rules.spin]
event = "visit"
grant = "item"
item = "checkin:golden"
fixed = 1

[quests.weekly_buyer]
title = "Weekly buyer"
kind = "weekly"
event = "purchase"
target = 3
rewards = { xp = 50, items = { "checkin:golden" = 2, "checkin:makeup" = 1 } }
"""
    found = problems(text)
    assert set(found) == {"rules.spin.item", "tiers[silver].rewards.items.checkin:golden",
                          "quests.weekly_buyer.rewards.items.checkin:golden"}
    for reason in found.values():
        assert reason == "no item 'checkin:golden' is declared by this programme's games (declared: checkin:makeup)"


def test_an_item_of_a_game_the_programme_lacks_is_refused() -> None:
    """Without [games.checkin] nothing declares the cards: the reason says where they come from."""
    text = RULES.replace("[games.checkin]\nmakeup_cards_cap = 5\n", "")
    found = problems(text)
    assert set(found) == {"rules.card_per_visit.item", "rules.cards_per_purchase.item"}
    assert found["rules.card_per_visit.item"] == (
        "no item 'checkin:makeup' is declared by this programme's games (declared: none); the checkin game "
        "declares its items in [games.checkin], which this programme does not have")


def test_a_game_section_with_problems_is_not_blamed_twice() -> None:
    """A broken [games.checkin] is reported; the items it would declare are not reported missing."""
    found = problems(RULES.replace("makeup_cards_cap = 5", "makeup_cards_cap = -1"))
    assert set(found) == {"games.checkin.makeup_cards_cap"}


def test_an_item_rule_needs_its_item_and_only_it_names_one() -> None:
    text = BASE + """
[rules.no_item]
event = "visit"
grant = "item"
fixed = 1

[rules.xp_with_item]
event = "visit"
grant = "xp"
item = "checkin:makeup"
fixed = 1

[rules.bad_name]
event = "visit"
grant = "item"
item = "makeup"
fixed = 1
"""
    found = problems(text)
    assert found == {
        "rules.no_item.item": 'a rule with grant = "item" names the item it grants: item = "<game>:<item>"',
        "rules.xp_with_item.item": 'only a rule with grant = "item" names an item; this one grants xp',
        "rules.bad_name.item": found["rules.bad_name.item"],
    }
    assert found["rules.bad_name.item"].startswith("item names are <game>:<item>")


def test_rewards_items_are_bounded() -> None:
    """At least one of each item, at most MAX_ITEMS_PER_REWARD items, names as items are named."""
    text = QUEST.replace('items = { "checkin:makeup" = 3 }', 'items = { "checkin:makeup" = 0, "Bad" = 1 }')
    found = problems(text)
    assert set(found) == {"quests.two_orders.rewards.items.checkin:makeup", "quests.two_orders.rewards.items.Bad"}
    assert found["quests.two_orders.rewards.items.checkin:makeup"] == "must be at least 1"
