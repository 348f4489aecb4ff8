"""The collect-cards game's rules as properties (a draw never gives a card past its budget and, over
every value of u, gives the cards in budget exactly their weights' shares; pity gives the rare
card exactly when due and a rare card has room; a race at a budget's edge never breaks it; a
combine consumes exactly one set; the pool's split adds up to the pool to the cent), and the
programme checks of ``[games.cards.<campaign>]``. Pure: no server."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from itertools import combinations
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.config import Program, item_field, parse_program
from games.cards.config import Campaign, Campaigns, check, draw_item, items
from games.cards.rules import (
    Slot,
    can_combine,
    consume,
    draw,
    draw_range,
    eligible_weights,
    fallback_order,
    give,
    has_room,
    issued_ok,
    pity_after,
    pity_due,
    points_of,
    room_of,
    settle_points,
    slots,
    split_pool,
)

# --- the draw ------------------------------------------------------------------------------------

slot = st.builds(Slot, st.integers(0, 40), st.none() | st.integers(0, 3), st.booleans(), st.booleans())
decks = st.lists(slot, min_size=1, max_size=8)


@given(decks, st.booleans())
def test_over_every_u_the_cards_in_budget_are_drawn_exactly_their_weights(cards: list[Slot], due: bool) -> None:
    """Counting over the whole range of u: each card is drawn exactly its eligible weight times, a
    card out of budget never; with nothing eligible the draw is None (the chance is kept)."""
    shares = eligible_weights(cards, due)
    total = draw_range(cards, due)
    assert total == sum(shares)
    counts = Counter(draw(cards, u, due) for u in range(total))
    assert [counts.get(i, 0) for i in range(len(cards))] == shares
    assert all(i is not None and has_room(cards[i]) for i in counts)  # never a card without room
    if total == 0:
        assert draw(cards, 0, due) is None
    else:
        with pytest.raises(ValueError):
            draw(cards, total, due)


@given(decks)
def test_an_ordinary_draw_gives_each_card_in_budget_its_weight(cards: list[Slot]) -> None:
    """Odds are published per type while in budget: a spent type's share goes to the others."""
    assert eligible_weights(cards, False) == [s.weight if s.room is None or s.room > 0 else 0 for s in cards]


@given(decks)
def test_pity_gives_a_rare_card_exactly_when_one_has_room(cards: list[Slot]) -> None:
    """Due, with a rare card in budget: only the rare cards in budget share the draw, by weight
    (weight 0 counting as 1); due without one: the ordinary draw, and the pity waits."""
    rare_room = [i for i, s in enumerate(cards) if s.rare and has_room(s)]
    drawn = {draw(cards, u, True) for u in range(draw_range(cards, True))}
    if rare_room:
        assert drawn == set(rare_room)
        assert eligible_weights(cards, True) == [max(s.weight, 1) if i in rare_room else 0
                                                 for i, s in enumerate(cards)]
    else:
        assert eligible_weights(cards, True) == eligible_weights(cards, False)
        assert not any(i is not None and cards[i].rare for i in drawn)


@given(st.integers(0, 50), st.none() | st.integers(1, 20))
def test_the_pity_counter(since: int, pity_draws: int | None) -> None:
    assert pity_due(since, pity_draws) == (pity_draws is not None and since >= pity_draws)
    assert pity_after(since, True) == 0
    assert pity_after(since, False) == since + 1


@given(decks, st.data())
def test_the_fallback_is_the_common_cards_in_budget_heaviest_first(cards: list[Slot], data: st.DataObject) -> None:
    drawn = data.draw(st.integers(0, len(cards) - 1))
    order = fallback_order(cards, drawn)
    assert drawn not in order
    assert all(has_room(cards[i]) and cards[i].weight > 0 and not cards[i].rare and not cards[i].universal for i in order)
    assert [(-cards[i].weight, i) for i in order] == sorted((-cards[i].weight, i) for i in order)
    common = {i for i, s in enumerate(cards) if i != drawn and has_room(s) and s.weight > 0 and not s.rare
              and not s.universal}
    assert set(order) == common
    got = give(cards, drawn, order)
    assert got is None or has_room(cards[got])
    assert (got == drawn) == has_room(cards[drawn])


budgeted = st.builds(Slot, st.integers(0, 20), st.integers(0, 6), st.booleans(), st.booleans())


@settings(max_examples=60)
@given(st.lists(budgeted, min_size=2, max_size=6), st.integers(1, 6), st.integers(0, 2**32), st.integers(1, 6))
def test_racing_draws_never_break_a_budget_and_pity_never_overdue(
        deck: list[Slot], pity_draws: int, seed: int, racers: int) -> None:
    """Draws run in rounds of ``racers`` members who each draw on the counts read at the round's
    start (stale for all but the first), then the object's script gives the drawn card or the first
    fallback with room on the live counts: no budget is ever passed; a member's run of draws without
    a rare card goes past ``pity_draws`` only when no rare card had room or a race took it."""
    rng = random.Random(seed)
    budgets = [s.room for s in deck]
    issued = [0] * len(deck)
    counters = [0] * racers

    def live() -> list[Slot]:
        return [s._replace(room=room_of(issued[i], budgets[i])) for i, s in enumerate(deck)]

    for _ in range(12):
        seen = live()
        for m in range(racers):
            due = pity_due(counters[m], pity_draws)
            total = draw_range(seen, due)
            if total == 0:
                continue
            drawn = draw(seen, rng.randrange(total), due)
            assert drawn is not None
            if due and any(s.rare and has_room(s) for s in seen):
                assert deck[drawn].rare  # a pity due with a rare card in budget draws one
            got = give(live(), drawn, fallback_order(seen, drawn))
            if got is None:
                continue
            assert deck[got].rare <= (got == drawn)  # a race never hands out a rare card
            issued[got] += 1
            assert all(issued_ok(n, b) for n, b in zip(issued, budgets, strict=True))
            counters[m] = pity_after(counters[m], deck[got].rare)


@given(st.integers(0, 100), st.none() | st.integers(0, 100))
def test_room_and_the_budget_invariant(issued: int, budget: int | None) -> None:
    room = room_of(issued, budget)
    assert room is None if budget is None else room == max(0, budget - issued)
    assert issued_ok(issued, budget) == (budget is None or issued <= budget)


# --- combining -----------------------------------------------------------------------------------

TYPES = ("a", "b", "c", "d", "e")


@given(st.integers(2, 5), st.lists(st.integers(0, 3), min_size=6, max_size=6), st.booleans(), st.integers(0, 4))
def test_a_combine_consumes_exactly_one_set(n: int, counts: list[int], has_universal: bool, stands_for: int) -> None:
    """Exactly one card of each type, a universal card for each type held none of, never more of
    them than allowed nor than held; None exactly when no way to cover every type exists."""
    types = TYPES[:n]
    universal = "u" if has_universal else None
    held = dict(zip((*types, "u"), counts[: n] + counts[-1:], strict=True))
    # The oracle: some set of types covered by universal cards, each other type by a real card.
    possible = any(all(held[t] >= 1 for t in types if t not in covered)
                   and (not covered or (universal is not None and len(covered) <= min(stands_for, held["u"])))
                   for k in range(n + 1) for covered in combinations(types, k))
    taken = can_combine(held, types, universal, stands_for)
    assert (taken is not None) == possible
    if taken is None:
        return
    wild = taken.get("u", 0)
    assert set(taken) <= {*types, "u"}
    assert all(taken.get(t, 0) in (0, 1) for t in types)
    assert sum(taken.get(t, 0) for t in types) + wild == n  # one set: every type once
    assert wild == sum(1 for t in types if held[t] == 0)  # real cards first: a universal only for a missing type
    assert wild <= stands_for and wild <= held["u"]
    left = consume(held, taken)
    assert sum(left.values()) + sum(taken.values()) == sum(held.values())  # conservation


def test_combine_refuses_a_universal_among_the_types() -> None:
    with pytest.raises(ValueError):
        can_combine({"a": 1}, ("a", "a"), None, 1)
    with pytest.raises(ValueError):
        can_combine({"a": 1}, ("a", "u"), "u", 1)
    with pytest.raises(ValueError):
        consume({"a": 1}, {"a": 2})


# --- the pool ------------------------------------------------------------------------------------


@given(st.integers(0, 10**12), st.integers(0, 60))
def test_the_split_adds_up_to_the_pool_and_the_remainder_goes_to_the_earliest(pool: int, n: int) -> None:
    members = [f"m{i}" for i in range(n)]
    shares = split_pool(pool, members)
    if n == 0:
        assert shares == []
        return
    assert [m for m, _ in shares] == members
    amounts = [c for _, c in shares]
    assert sum(amounts) == pool
    assert max(amounts) - min(amounts) <= 1
    assert amounts == sorted(amounts, reverse=True)  # the extra cents to the earliest
    assert sum(1 for c in amounts if c > pool // n) == pool % n


def test_a_member_shares_once() -> None:
    with pytest.raises(ValueError):
        split_pool(10, ["a", "a"])
    with pytest.raises(ValueError):
        split_pool(-1, ["a"])


@given(st.integers(0, 10**12), st.integers(0, 40), st.integers(1, 10_000))
def test_a_points_payout_conserves_the_pool(pool: int, n: int, per_point: int) -> None:
    """Paid points x cents per point + what the shop keeps = the pool, exactly; the shop keeps less
    than one point's worth, or the whole pool when nobody combined."""
    members = [f"m{i}" for i in range(n)]
    settled = settle_points(pool, members, per_point)
    assert sum(p for _, p in settled.shares) * per_point + settled.kept_cents == pool
    assert settled.kept_cents == (pool if n == 0 else pool % per_point)
    assert points_of(pool, per_point) == pool // per_point
    if n:
        points = [p for _, p in settled.shares]
        assert max(points) - min(points) <= 1


# --- the programme section -----------------------------------------------------------------------

PROGRAM = """
[program]
name = "cards"
timezone = "Asia/Shanghai"

[events.pay]
fields.cents = { type = "int", min = 1 }

[[tiers]]
id = "base"
name = "Base"
xp = 0

[catalog.voucher]
title = "A voucher"
value_cents = 500
"""
CST = timezone(timedelta(hours=8))
DEADLINE = datetime(2027, 2, 10, 20, 0, tzinfo=CST)


@pytest.fixture(scope="module")
def prog() -> Program:
    return parse_program(PROGRAM, "cards.toml")


def campaign(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "title": "Five blessings",
        "cards": [
            {"name": "ai", "title": "爱国福", "weight": 30},
            {"name": "fu", "title": "富强福", "weight": 30, "daily_budget": 10_000},
            {"name": "he", "title": "和谐福", "weight": 20},
            {"name": "you", "title": "友善福", "weight": 19},
            {"name": "jing", "title": "敬业福", "weight": 1, "daily_budget": 500, "rare": True},
        ],
        "universal": {"name": "wan", "title": "万能福", "weight": 2, "daily_budget": 100},
        "pity_draws": 30,
        "pool_cents": 50_000_000,
        "deadline": DEADLINE,
    }
    return base | changes


def problems(prog: Program, **changes: Any) -> dict[str, str]:
    section = Campaigns.model_validate({"spring": campaign(**changes)})
    return dict(check(prog, section))


def test_a_good_campaign_passes(prog: Program) -> None:
    section = Campaigns.model_validate({"spring": campaign()})
    assert check(prog, section) == []
    spring = section.root["spring"]
    assert spring.deck == ("ai", "fu", "he", "you", "jing", "wan")
    assert spring.universal_stands_for == 1 and spring.remainder == "first_combiners"
    assert draw_item("spring") == "cards:spring"
    assert items(section)["cards:spring"].field == item_field("cards:spring")
    s = slots(spring, {"jing": 500, "wan": 3})
    assert [x.room for x in s] == [None, 10_000, None, None, 0, 97]
    assert s[4].rare and s[5].universal and not s[0].rare
    coupon = campaign(payout="coupon", coupon="voucher")
    del coupon["pool_cents"]
    assert check(prog, Campaigns.model_validate({"spring": coupon})) == []


def test_a_campaign_that_cannot_work_is_refused_naming_the_key(prog: Program) -> None:
    p = "games.cards.spring"
    one = [{"name": "ai", "title": "A", "weight": 1}]
    assert problems(prog, cards=one, universal=None, pity_draws=None) == {f"{p}.cards": "a set needs at least 2 card types, not 1"}
    twice = campaign()["cards"] + [{"name": "ai", "title": "again", "weight": 1}]
    assert problems(prog, cards=twice) == {f"{p}.cards[5].name": "another card type is named 'ai' already"}
    assert problems(prog, universal={"name": "fu", "title": "x", "weight": 1}) == {
        f"{p}.universal.name": "a card type is named 'fu' already"}
    zero = [c | {"weight": 0} for c in campaign()["cards"]]
    assert problems(prog, cards=zero) == {f"{p}.cards": "no card type has a weight above 0: no draw could give a card"}
    dead = campaign()["cards"][:2] + [{"name": "he", "title": "和谐福", "weight": 0}]
    assert problems(prog, cards=dead, pity_draws=None) == {
        f"{p}.cards[2].weight": "card 'he' has weight 0 and no draw can give it, so no member could ever complete a set"}
    assert "pity_draws is not set" in problems(prog, pity_draws=None, cards=[
        *campaign()["cards"][:4], {"name": "jing", "title": "敬业福", "weight": 0, "daily_budget": 5, "rare": True}],
    )[f"{p}.cards[4].weight"]
    assert problems(prog, universal={"name": "wan", "title": "万能福", "weight": 0}) == {
        f"{p}.universal.weight": "is 0: no draw could give the universal card (leave [universal] out for a campaign "
                                 "without one)"}
    assert problems(prog, universal_stands_for=5)[f"{p}.universal_stands_for"].startswith("is 5 for a set of 5")
    assert problems(prog, universal=None, universal_stands_for=2) == {
        f"{p}.universal_stands_for": "is set but the campaign has no universal card"}
    no_rare = [c | {"rare": False} for c in campaign()["cards"]]
    assert problems(prog, cards=no_rare) == {f"{p}.pity_draws": "no card type is rare: pity would have nothing to give"}
    unbounded = [*campaign()["cards"][:4], {"name": "jing", "title": "敬业福", "weight": 1, "rare": True}]
    assert "no daily budget" in problems(prog, cards=unbounded)[f"{p}.cards[4].daily_budget"]
    assert problems(prog, cards=unbounded, pity_draws=None) == {}  # rare without pity: a label
    assert problems(prog, payout="coupon", coupon="gift", pool_cents=0) == {
        f"{p}.coupon": "no catalog item 'gift' is declared under [catalog]"}
    assert set(problems(prog, payout="coupon", cents_per_point=10)) == {
        f"{p}.coupon", f"{p}.pool_cents", f"{p}.cents_per_point"}
    assert set(problems(prog, coupon="voucher")) == {f"{p}.coupon"}
    assert problems(prog, opens_at=DEADLINE) == {f"{p}.deadline": "is not after opens_at"}


def test_budget_zero_is_legal_and_pool_must_be_written(prog: Program) -> None:
    today_off = [c | {"daily_budget": 0} if c["name"] == "he" else c for c in campaign()["cards"]]
    assert problems(prog, cards=today_off) == {}
    no_pool = campaign()
    del no_pool["pool_cents"]
    found = dict(check(prog, Campaigns.model_validate({"spring": no_pool})))
    assert list(found) == ["games.cards.spring.pool_cents"]


def test_the_section_is_strict(prog: Program) -> None:
    for bad in (campaign(extra=1), campaign(pool_cents="5"), campaign(pity_draws=0), campaign(payout="cash"),
                campaign(deadline=datetime(2027, 2, 10)), campaign(cards=[{"name": "x", "title": "X", "weight": -1}] * 2)):
        with pytest.raises(ValidationError):
            Campaigns.model_validate({"spring": bad})
    card = Campaign.model_validate(campaign()).cards[0]
    with pytest.raises(ValidationError):
        card.weight = 5  # type: ignore[misc]
