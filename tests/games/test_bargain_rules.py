"""The bargain's rules as properties: every schedule is a cent or more a unit, adds up to the
amount and has its algorithm's shape; any sequence of helps and releases, in any order, keeps the
totals consistent and lands exactly on the floor; the same seed replays the same bargain. And the
section's checks, on the models directly (the game is not registered with the engine yet)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.config import Program, parse_program
from games.bargain.config import ALGORITHMS, Campaign, Campaigns, check
from games.bargain.rules import (
    DAY_MS,
    Draws,
    bargain_seed,
    first_cut,
    help_cut,
    help_weight,
    new_member,
    prefix_sums,
    replay,
    share_cents,
    unit_cuts,
)

seeds = st.binary(max_size=40)
algorithms = st.sampled_from(ALGORITHMS)


@st.composite
def sizes(draw: Any, max_units: int = 200) -> tuple[int, int]:
    """(amount, units) with amount >= units: tight (a cent or two a unit), small and large."""
    units = draw(st.integers(1, max_units))
    extra = draw(st.one_of(st.integers(0, 3), st.integers(0, 5_000), st.integers(0, 1_000_000_000 - units)))
    return units + extra, units


def check_cuts(cuts: list[int], amount: int, units: int) -> None:
    assert len(cuts) == units
    assert all(c >= 1 for c in cuts)
    assert sum(cuts) == amount


# --- the schedule --------------------------------------------------------------------------------


@settings(max_examples=300)
@given(algorithms, seeds, sizes())
def test_every_schedule_is_a_cent_or_more_a_unit_and_adds_up_to_the_amount(
        algorithm: str, seed: bytes, size: tuple[int, int]) -> None:
    amount, units = size
    check_cuts(unit_cuts(algorithm, seed, amount, units), amount, units)


@settings(max_examples=200)
@given(algorithms, seeds, sizes())
def test_the_same_seed_draws_the_same_schedule(algorithm: str, seed: bytes, size: tuple[int, int]) -> None:
    amount, units = size
    assert unit_cuts(algorithm, seed, amount, units) == unit_cuts(algorithm, bytes(seed), amount, units)


@settings(max_examples=200)
@given(seeds, sizes())
def test_a_schedule_never_increases(seed: bytes, size: tuple[int, int]) -> None:
    amount, units = size
    cuts = unit_cuts("schedule", seed, amount, units)
    assert all(a >= b for a, b in zip(cuts, cuts[1:]))


@settings(max_examples=300)
@given(seeds, sizes(), st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True))
def test_a_first_cut_share_sets_the_first_cut_and_the_rest_still_decreases(
        seed: bytes, size: tuple[int, int], share: float) -> None:
    amount, units = size
    cuts = unit_cuts("schedule", seed, amount, units, first_cut_share=share)
    check_cuts(cuts, amount, units)
    assert all(a >= b for a, b in zip(cuts, cuts[1:]))
    if units > 1:
        assert cuts[0] == first_cut(amount, units, share)
        wanted = share_cents(amount, share)
        if -(-amount // units) <= wanted <= amount - (units - 1):  # a share `rekindle check` accepts
            assert cuts[0] == wanted


def test_a_first_cut_share_is_the_decimal_written() -> None:
    """0.29 x 100 is 28.999... in floats: the share is read as written, 29 cents."""
    assert share_cents(100, 0.29) == 29
    assert share_cents(99, 0.5) == 49  # rounded down
    cuts = unit_cuts("schedule", b"s", 100, 5, first_cut_share=0.29)
    assert cuts[0] == 29


@settings(max_examples=300)
@given(seeds, sizes())
def test_the_red_packet_draw_is_each_unit_within_twice_the_mean_left(seed: bytes, size: tuple[int, int]) -> None:
    """Each unit but the last in [1, min(2 x the mean left, what leaves a cent a unit)]; the last
    unit is the rest."""
    amount, units = size
    cuts = unit_cuts("red_packet", seed, amount, units)
    check_cuts(cuts, amount, units)
    left = amount
    for i, cut in enumerate(cuts[:-1]):
        k = units - i
        assert 1 <= cut <= 2 * left // k
        assert cut <= left - (k - 1)
        left -= cut
    assert cuts[-1] == left


@settings(max_examples=300)
@given(seeds, sizes())
def test_line_cutting_has_distinct_points_on_the_line(seed: bytes, size: tuple[int, int]) -> None:
    amount, units = size
    cuts = unit_cuts("line", seed, amount, units)
    points = prefix_sums(cuts)[1:-1]
    assert len(set(points)) == units - 1
    assert all(0 < p < amount for p in points)
    assert points == sorted(points)


def test_the_shapes_are_what_they_say_over_many_seeds() -> None:
    """Deterministic seeds, so no flake: red packets and line pieces average the even split at
    every position; a schedule's first cut is far above its last."""
    amount, units, n = 1_000, 10, 2_000
    for algorithm in ("red_packet", "line"):
        totals = [0] * units
        for i in range(n):
            for j, cut in enumerate(unit_cuts(algorithm, i.to_bytes(4, "big"), amount, units)):
                totals[j] += cut
        assert all(abs(t / n - amount / units) < 12 for t in totals), (algorithm, [t / n for t in totals])
    schedules = [unit_cuts("schedule", i.to_bytes(4, "big"), amount, units) for i in range(500)]
    assert sum(s[0] for s in schedules) / 500 > 5 * sum(s[-1] for s in schedules) / 500


def test_a_schedule_is_pinned_so_a_replay_never_drifts() -> None:
    """The draws are our own (SHA-256 counter stream), not Python's: these stay as they are."""
    seed = bargain_seed("c", "m1", "op1")
    assert seed.hex() == bargain_seed("c", "m1", "op1").hex()
    assert unit_cuts("schedule", seed, 1000, 10) == [399, 154, 115, 108, 98, 62, 40, 15, 8, 1]
    assert unit_cuts("red_packet", seed, 1000, 10) == [35, 30, 163, 5, 247, 84, 148, 111, 114, 63]
    assert unit_cuts("line", seed, 1000, 10) == [75, 25, 36, 155, 164, 1, 396, 81, 52, 15]
    assert unit_cuts("schedule", seed, 1000, 10, 0.5) == [500, 220, 86, 64, 60, 34, 22, 8, 5, 1]


@pytest.mark.parametrize(("args", "kwargs"), [
    (("schedule", b"", 10, 0), {}),
    (("schedule", b"", 9, 10), {}),
    (("line", b"", 0, 1), {}),
    (("coin", b"", 10, 2), {}),
    (("red_packet", b"", 10, 2), {"first_cut_share": 0.5}),
    (("schedule", b"", 10, 2), {"first_cut_share": 1.0}),
    (("schedule", b"", 10, 2), {"first_cut_share": 0.0}),
    (("schedule", b"", 10, 2), {"first_cut_share": float("nan")}),
])
def test_a_schedule_that_cannot_be_is_refused(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        unit_cuts(*args, **kwargs)


def test_a_one_unit_bargain_is_cut_in_one() -> None:
    for algorithm in ALGORITHMS:
        assert unit_cuts(algorithm, b"x", 777, 1) == [777]
    assert unit_cuts("schedule", b"x", 777, 1, first_cut_share=0.3) == [777]


def test_prefix_sums_start_at_zero_and_end_at_the_amount() -> None:
    assert prefix_sums([5, 3, 2]) == [0, 5, 8, 10]
    assert prefix_sums([]) == [0]


# --- the draws -----------------------------------------------------------------------------------


@settings(max_examples=200)
@given(seeds, st.integers(1, 10**12), st.integers(0, 50))
def test_draws_stay_in_range_and_samples_are_distinct(seed: bytes, n: int, k: int) -> None:
    draws = Draws(seed)
    assert 0 <= draws.below(n) < n
    k = min(k, n)
    picked = draws.sample(n, k)
    assert len(picked) == len(set(picked)) == k
    assert all(0 <= p < n for p in picked)


def test_samples_are_uniform_over_subsets() -> None:
    """Every 2-subset of 5 about equally often (10 subsets, 5,000 seeds: 500 each)."""
    counts = Counter(frozenset(Draws(i.to_bytes(4, "big")).sample(5, 2)) for i in range(5_000))
    assert len(counts) == 10
    assert all(400 < c < 600 for c in counts.values()), counts


# --- helps and releases --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.data(), algorithms, seeds, sizes(max_units=30))
def test_any_helps_and_releases_keep_the_totals_and_land_on_the_floor(
        data: st.DataObject, algorithm: str, seed: bytes, size: tuple[int, int]) -> None:
    """Helps of any weight, and releases of any live help (its units and cents given back, as
    the object's release does), in any order: the cents taken are the live cuts', each cut is at
    least its units, a cent a unit is always left, and reaching the last unit is the floor."""
    amount, units = size
    prefix = prefix_sums(unit_cuts(algorithm, seed, amount, units))
    live: list[tuple[int, int]] = []
    used = taken = 0
    for _ in range(data.draw(st.integers(1, 80), label="steps")):
        release = live and (used == units or data.draw(st.integers(0, 3), label="action") == 0)
        if release:
            w, cut = live.pop(data.draw(st.integers(0, len(live) - 1), label="released"))
            used, taken = used - w, taken - cut
        else:
            weight = data.draw(st.integers(1, 10), label="weight")
            w, cut = help_cut(prefix, amount, units, used, taken, weight)
            assert w == min(weight, units - used)
            live.append((w, cut))
            used, taken = used + w, taken + cut
            if used == units:
                assert taken == amount  # the floor, exactly
        assert taken == sum(c for _, c in live)
        assert used == sum(w for w, _ in live)
        assert all(c >= w >= 1 for w, c in live)
        assert amount - taken >= units - used  # a cent left for every unit to come
        assert 0 <= used <= units


@settings(max_examples=200)
@given(algorithms, seeds, sizes())
def test_helps_of_one_unit_cut_exactly_the_schedule(algorithm: str, seed: bytes, size: tuple[int, int]) -> None:
    amount, units = size
    cuts = unit_cuts(algorithm, seed, amount, units)
    assert replay(algorithm, seed, amount, units, [1] * units) == [(1, c) for c in cuts]


@settings(max_examples=200)
@given(algorithms, seeds, sizes(max_units=50), st.lists(st.integers(1, 10), min_size=1, max_size=60))
def test_without_releases_a_help_cuts_its_units_of_the_schedule(
        algorithm: str, seed: bytes, size: tuple[int, int], weights: list[int]) -> None:
    """No release: the cents taken are always the schedule's prefix sum of the units used, and
    the helps stop at the floor."""
    amount, units = size
    prefix = prefix_sums(unit_cuts(algorithm, seed, amount, units))
    helps = replay(algorithm, seed, amount, units, weights)
    used = 0
    for w, cut in helps:
        assert cut == prefix[used + w] - prefix[used]
        used += w
    assert used == min(units, sum(weights))
    assert len(helps) <= len(weights)
    if used == units:
        assert sum(c for _, c in helps) == amount


def test_a_help_on_a_closed_bargain_or_worth_nothing_is_refused() -> None:
    prefix = prefix_sums([5, 3, 2])
    with pytest.raises(ValueError):
        help_cut(prefix, 10, 3, 3, 10, 1)
    with pytest.raises(ValueError):
        help_cut(prefix, 10, 3, 0, 0, 0)
    with pytest.raises(ValueError):
        help_cut(prefix, 10, 3, 1, 9, 1)  # 1 cent left for 2 units: the object is broken


def test_a_release_out_of_order_is_clamped() -> None:
    """Schedule [5, 3, 2]: helps A (5) and B (3), A released (used 1, taken 3): the next help
    cuts the schedule's second unit (3) again, and the last lands on the floor with what is left."""
    prefix, amount, units = prefix_sums([5, 3, 2]), 10, 3
    assert help_cut(prefix, amount, units, 1, 3, 1) == (1, 3)
    assert help_cut(prefix, amount, units, 2, 6, 1) == (1, 4)
    # Schedule [1, 8, 1]: A (1) and B (8), A released (used 1, taken 8): the schedule's 8 would
    # leave nothing for the last unit, so the help cuts 1 and the last the remaining 1.
    prefix = prefix_sums([1, 8, 1])
    assert help_cut(prefix, amount, units, 1, 8, 1) == (1, 1)
    assert help_cut(prefix, amount, units, 2, 9, 1) == (1, 1)
    # a help worth more than the units left takes what is left and lands on the floor
    assert help_cut(prefix, amount, units, 1, 8, 5) == (2, 2)


def test_replay_stops_at_the_floor() -> None:
    helps = replay("schedule", b"seed", 1000, 10, [1, 3, 1, 1, 10, 1, 1])
    assert sum(w for w, _ in helps) == 10
    assert sum(c for _, c in helps) == 1000
    assert len(helps) == 5


# --- members and seeds ---------------------------------------------------------------------------


def test_a_member_is_new_without_an_operation_or_within_the_days() -> None:
    now = 100 * DAY_MS
    assert new_member(None, now, 7)
    assert new_member(now, now, 7)
    assert new_member(now - 7 * DAY_MS + 1, now, 7)
    assert not new_member(now - 7 * DAY_MS, now, 7)
    assert not new_member(0, now, 7)


def test_a_new_member_helps_with_the_campaigns_units() -> None:
    campaign = Campaign.model_validate({**GOOD, "new_member_units": 3})
    assert help_weight(campaign, True) == 3
    assert help_weight(campaign, False) == 1
    assert help_weight(Campaign.model_validate(GOOD), True) == 1


def test_the_seed_is_the_start_and_nothing_else() -> None:
    seed = bargain_seed("phone", "m1", "op-1")
    assert seed == bargain_seed("phone", "m1", "op-1")  # a retried start replays
    assert len(seed) == 32
    others = {bargain_seed("phone", "m1", "op-2"), bargain_seed("phone", "m2", "op-1"),
              bargain_seed("phone2", "m1", "op-1"), bargain_seed("phon", "em1", "op-1"),
              bargain_seed("phone", "m1o", "p-1")}
    assert seed not in others and len(others) == 5


# --- the section ---------------------------------------------------------------------------------

PROGRAM = """
[program]
name = "bargains"
timezone = "Asia/Shanghai"

[events.pay]
fields.cents = { type = "int", min = 1 }

[[tiers]]
id = "base"
name = "Base"
xp = 0

[catalog.kettle]
title = "A kettle, free"
value_cents = 9900
valid_days = 14
"""

GOOD: dict[str, Any] = {"title": "Cut a kettle to free", "item": "kettle", "price_cents": 9900, "helpers": 20}


@pytest.fixture(scope="module")
def program() -> Program:
    return parse_program(PROGRAM, "inline.toml")


def problems(program: Program, **terms: Any) -> dict[str, str]:
    section = Campaigns.model_validate({"kettle": {**GOOD, **terms}})
    return dict(check(program, section))


def test_a_campaign_as_designed_has_no_problems_and_its_defaults(program: Program) -> None:
    assert problems(program) == {}
    assert problems(program, algorithm="schedule", first_cut_share=0.5, floor_cents=100) == {}
    campaign = Campaigns.model_validate({"kettle": GOOD}).root["kettle"]
    assert (campaign.floor_cents, campaign.algorithm, campaign.first_cut_share) == (0, "schedule", None)
    assert (campaign.new_member_units, campaign.new_member_days, campaign.duration_hours) == (1, 7, 24)
    assert campaign.helps_per_day == 5
    assert campaign.amount == 9900


def test_check_names_each_mistake_with_its_key_path(program: Program) -> None:
    path = "games.bargain.kettle"
    assert problems(program, item="toaster") == {
        f"{path}.item": "no catalog item 'toaster' is declared under [catalog]"}
    assert f"{path}.floor_cents" in problems(program, floor_cents=9900)
    assert f"{path}.floor_cents" in problems(program, floor_cents=10_000)
    assert problems(program, price_cents=30, helpers=50)[f"{path}.helpers"].startswith(
        "helpers 50 cannot each cut at least 1 cent of 30 cents")
    assert problems(program, price_cents=130, floor_cents=100, helpers=30) == {}  # a cent each: fine
    assert f"{path}.new_member_units" in problems(program, helpers=3, new_member_units=4)
    assert problems(program, helpers=3, new_member_units=3) == {}  # one new member alone: allowed
    assert "red_packet" in problems(program, algorithm="red_packet", first_cut_share=0.5)[f"{path}.first_cut_share"]
    assert f"{path}.first_cut_share" in problems(program, algorithm="line", first_cut_share=0.5)
    for share in (0, 0.0, 1, 1.0, -0.5, 2.5, float("nan"), float("inf")):
        assert f"{path}.first_cut_share" in problems(program, first_cut_share=share), share
    assert "even split" in problems(program, first_cut_share=0.01)[f"{path}.first_cut_share"]
    assert "1 cent for each" in problems(program, price_cents=30, helpers=20, first_cut_share=0.9)[
        f"{path}.first_cut_share"]
    assert f"{path}.first_cut_share" in problems(program, helpers=1, first_cut_share=0.5)
    assert problems(program, opens_at="2026-12-12T00:00:00+08:00", ends_at="2026-12-11T00:00:00+08:00") == {
        f"{path}.ends_at": "is not after opens_at"}


def test_every_problem_at_once(program: Program) -> None:
    found = problems(program, item="toaster", price_cents=30, helpers=50, new_member_units=10,
                     algorithm="line", first_cut_share=0.5)
    assert set(found) == {f"games.bargain.kettle.{k}" for k in ("item", "helpers", "first_cut_share")}
    found = problems(program, helpers=2, new_member_units=3)
    assert set(found) == {"games.bargain.kettle.new_member_units"}


@pytest.mark.parametrize("terms", [
    {"price_cents": "9900"},  # strict: a string is not cents
    {"price_cents": 0},
    {"price_cents": 99.0},
    {"floor_cents": -1},
    {"helpers": 0},
    {"helpers": 201},
    {"algorithm": "coin"},
    {"first_cut_share": True},
    {"first_cut_share": "0.5"},
    {"new_member_units": 0},
    {"new_member_units": 11},
    {"new_member_days": 0},
    {"duration_hours": 0},
    {"duration_hours": 721},
    {"helps_per_day": 0},
    {"max_open_per_member": 0},
    {"opens_at": "2026-12-12T00:00:00"},  # no UTC offset
    {"colour": "red"},  # unknown keys are refused
    {"title": ""},
])
def test_the_model_refuses_a_shape_mistake(terms: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Campaigns.model_validate({"kettle": {**GOOD, **terms}})


def test_the_model_refuses_a_missing_term_and_a_bad_name() -> None:
    for key in ("title", "item", "price_cents", "helpers"):
        with pytest.raises(ValidationError):
            Campaigns.model_validate({"kettle": {k: v for k, v in GOOD.items() if k != key}})
    with pytest.raises(ValidationError):
        Campaigns.model_validate({"bad name": GOOD})


def test_every_field_is_described() -> None:
    assert all(f.description for f in Campaign.model_fields.values())


# --- the anti-collusion report's flags (games/bargain/report.py), pure ------------------------------

from fractions import Fraction  # noqa: E402
from itertools import combinations  # noqa: E402

from games.bargain.report import Counts, flags, heavy_devices, new_member_owners, rings  # noqa: E402

people = st.sampled_from("abcdefg")


@st.composite
def help_pairs(draw: Any) -> dict[tuple[str, str], int]:
    """Directed helps among a few members, many of them reciprocal."""
    out: dict[tuple[str, str], int] = {}
    for a, b in draw(st.lists(st.tuples(people, people), max_size=30)):
        if a != b:
            out[(a, b)] = draw(st.integers(1, 6))
            if draw(st.booleans()):
                out[(b, a)] = draw(st.integers(1, 6))
    return out


def mutual_of(pairs: dict[tuple[str, str], int], least: int) -> set[frozenset[str]]:
    return {frozenset(p) for p, n in pairs.items() if n >= least and pairs.get((p[1], p[0]), 0) >= least}


@settings(max_examples=300)
@given(help_pairs(), st.integers(1, 4))
def test_rings_are_exactly_the_maximal_groups_helping_each_other_both_ways(
        pairs: dict[tuple[str, str], int], least: int) -> None:
    """With groups small enough to split (7 members at most, ``ring_max`` 8): the rings are the
    maximal sets of two or more in which every two helped each other ``least`` times each way (by
    brute force over every subset), each listing those helps each way, most helps first."""
    edges = mutual_of(pairs, least)
    members = sorted({m for e in edges for m in e})
    cliques = [set(s) for n in range(2, len(members) + 1) for s in combinations(members, n)
               if all(frozenset(p) in edges for p in combinations(s, 2))]
    maximal = {frozenset(c) for c in cliques if not any(c < d for d in cliques)}
    found = rings(pairs, least, 8)
    assert {frozenset(r["members"]) for r in found} == maximal and len(found) == len(maximal)
    for ring in found:
        assert ring["size"] == len(ring["members"]) and ring["members"] == sorted(ring["members"])
        assert {(h["helper"], h["owner"]): h["helps"] for h in ring["helps"]} == {
            (a, b): pairs[(a, b)] for a in ring["members"] for b in ring["members"] if a != b}
    totals = [sum(h["helps"] for h in r["helps"]) for r in found]
    assert totals == sorted(totals, reverse=True)
    assert rings(dict(reversed(list(pairs.items()))), least, 8) == found  # whatever order they were read in


def test_a_group_too_large_to_split_is_reported_by_its_size_and_busiest_members() -> None:
    """A chain of six members, each helping the next three times each way (a group, no clique of
    three): with ``ring_max`` 3 it is one entry of size 6 listing its three busiest; with 8, five
    rings of two."""
    chain = "abcdef"
    pairs = {(x, y): 3 for a, b in zip(chain, chain[1:]) for x, y in ((a, b), (b, a))}
    pairs[("c", "d")] = pairs[("d", "c")] = 9  # c and d: the busiest
    [big] = rings(pairs, 3, 3)
    assert (big["size"], len(big["members"])) == (6, 3) and set(big["members"]) >= {"c", "d"}
    assert all(h["helper"] in big["members"] and h["owner"] in big["members"] for h in big["helps"])
    small = rings(pairs, 3, 8)
    assert [r["members"] for r in small][0] == ["c", "d"] and len(small) == 5
    assert rings({("a", "b"): 3, ("b", "a"): 2}, 3) == [] and rings({("a", "a"): 9}, 1) == []


@given(st.lists(st.tuples(st.text("xyz", min_size=1, max_size=3), st.integers(1, 30), st.integers(0, 30)), max_size=20),
       st.integers(1, 10))
def test_an_owner_is_flagged_exactly_from_the_share_of_helps_by_new_members(
        owners: list[tuple[str, int, int]], least: int) -> None:
    owners = [(o, h, min(n, h)) for o, h, n in owners]
    flagged = new_member_owners(owners, least, Fraction(4, 5))
    assert sorted((f["owner"], f["helps"], f["from_new"]) for f in flagged) == sorted(
        (o, h, n) for o, h, n in owners if h >= least and 5 * n >= 4 * h)
    assert all(abs(f["share"] - f["from_new"] / f["helps"]) < 1e-4 for f in flagged)


def test_the_flags_at_their_thresholds() -> None:
    assert [o["owner"] for o in new_member_owners([("at", 5, 4), ("below", 10, 7), ("few", 4, 4)], 5)] == ["at"]
    assert heavy_devices([("d1", 19), ("d2", 20), ("d3", 25)], 20) == [
        {"device": "d3", "helps_today": 25}, {"device": "d2", "helps_today": 20}]
    report = flags("tea", "2026-01-01", Counts({}, [("o", 5, 5)], [("d", 30)]))
    assert report["thresholds"]["new_share"] == 0.8 and report["truncated"]["pairs"] is False
    assert [o["owner"] for o in report["new_member_owners"]] == ["o"] and report["rings"] == []


def test_the_owners_reward_is_the_decisions_item_and_floor(compile_toml: Any) -> None:
    """``plans.reward_of``: the decision's item at its floor, valid as the catalog says now; an
    item no longer in the catalog: the packed validity; an entry of an earlier build (a decision
    of three values): the packed terms."""
    from games.bargain.plans import reward_of
    from tests.games.test_bargain import program_of

    program = program_of(compile_toml)  # the teapot: valid 14 days
    packed = ("kettle", 30 * DAY_MS, 500)
    assert reward_of(program, packed, (5, 100, 1, "teapot", 100)) == ("teapot", 14 * DAY_MS, 100)
    assert reward_of(program, packed, (5, 100, 1, "gone", 100)) == ("gone", 30 * DAY_MS, 100)
    assert reward_of(program, packed, (5, 100, 1)) == packed
