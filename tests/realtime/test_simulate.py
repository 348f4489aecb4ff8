"""``rekindle simulate`` (realtime/simulate.py): a programme run on a synthetic population, through
the service's own parts on a scratch embedded Valkey."""

from __future__ import annotations

import asyncio
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.archetypes import Member, day_events, load_population, members, pick_bargains
from engine.config import compile_program, load_program, parse_program
from engine.errors import ConfigError
from engine.plugins import seeded_draws, system_draws
from realtime.cli import main
from realtime.report import render
from realtime.simulate import local_midnight, simulate, waves

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "config" / "member_day.toml"
ARCHETYPES = ROOT / "config" / "archetypes.toml"


START = date.today() + timedelta(days=3)  # one start for every run of the module (any zone's tomorrow or later)


def run(members_: int, days: int, seed: int, program: Path = PROGRAM) -> Any:
    return asyncio.run(simulate(program, ARCHETYPES, members_, days, seed, start=START))


def test_the_same_seed_gives_the_same_figures_and_they_add_up() -> None:
    first, second = run(120, 4, 11), run(120, 4, 11)
    assert first.summary() == second.summary()
    other = run(120, 4, 12)
    assert other.summary()["events"] != first.summary()["events"]

    program = load_program(PROGRAM)
    population = load_population(ARCHETYPES, program)
    people = members(population, 120, 4, 11)
    assert sum(m.archetype == "new" for m in people) == 12  # shares: 10% of 120
    # Every event the population planned was applied (refunds come on top, from purchases).
    planned = 0
    churned: set[str] = set()
    for d in range(4):
        for m in people:
            if m.joins_day > d + 1 or m.id in churned:
                continue
            events, gone = day_events(population, program, m, d, 11)
            if gone:
                churned.add(m.id)
            planned += len(events)
    s = first.summary()
    # Every event applied and counted, though the run's days lie ahead of the server's own time.
    assert s["events"] == planned + s["refunds"] and s["refused"] == {}
    p = s["points"]
    assert p["issued"] > 0 and p["outstanding"] == p["issued"] - p["spent"] - p["expired"]
    assert sum(s["tiers_at_end"].values()) == sum(1 for m in people if m.joins_day <= 4)
    assert s["care_moments"].get("welcome", 0) == sum(1 for m in people if 1 <= m.joins_day <= 4)
    assert s["quests_completed"]["first_order"] > 0
    assert s["games"]["checkin:ok"] > 0  # the archetypes play: through the check-in's own route
    # Spins and draws, their prizes and cards drawn from the seed: the same in both runs (above).
    assert s["games"].get("lottery:daily:ok", 0) > 0 and s["games"].get("cards:five-fu:ok", 0) > 0
    assert sum(n for k, n in s["game_outcomes"].items() if k.startswith("prize:daily:")) == s["games"]["lottery:daily:ok"]
    assert sum(n for k, n in s["game_outcomes"].items() if k.startswith("card:five-fu:")) == s["games"]["cards:five-fu:ok"]
    # Bargains started and helped by others; each ended one reached its floor or expired.
    teapot = s["bargains"]["teapot"]
    assert teapot["started"] == s["games"]["bargain:teapot:start:ok"] > 0 and teapot["helps"] > 0
    assert teapot["reached_floor"] + teapot["expired"] <= teapot["started"]
    assert s["games"].get("bargain:teapot:help:already_helped", 0) == 0  # what could only be refused is not sent
    assert "no set of card campaign five-fu is combined in 4 days" in " ".join(s["warnings"])


def test_helps_go_in_waves_that_keep_each_members_and_each_bargains_order() -> None:
    pairs = [("a", "x"), ("b", "x"), ("a", "y"), ("c", "z"), ("b", "y"), ("c", "x")]
    got = waves(pairs)
    assert sorted(p for w in got for p in w) == sorted(pairs)
    for wave in got:
        assert len({m for m, _ in wave}) == len(wave) == len({o for _, o in wave})
    index = {p: i for i, w in enumerate(got) for p in w}
    for key in (0, 1):  # each member's actions, and each object's, in the order given
        for i, p in enumerate(pairs):
            for q in pairs[i + 1 :]:
                if p[key] == q[key]:
                    assert index[p] < index[q]
    assert got == [[("a", "x"), ("c", "z")], [("b", "x"), ("a", "y")], [("b", "y"), ("c", "x")]]


def test_a_helper_never_picks_its_own_bargain() -> None:
    member = Member("m-1", "loyal", 0, None)
    open_ = [f"teapot.1.m-{n}" for n in range(10)]
    owner = {b: b.rsplit(".", 1)[1] for b in open_}
    for day in range(50):
        picked = pick_bargains(open_, owner, member, day, 7, 3)
        assert len(picked) == 3 == len(set(picked)) and "teapot.1.m-1" not in picked
    assert pick_bargains(open_, owner, member, 1, 7, 3) == pick_bargains(open_, owner, member, 1, 7, 3)
    assert pick_bargains(["teapot.1.m-1"], {"teapot.1.m-1": "m-1"}, member, 1, 7, 3) == []


def test_the_games_warn_what_a_designer_should_see(tmp_path: Path) -> None:
    """A wheel whose budget is one jackpot, a bargain 50 helpers from its floor: both said, with
    the numbers behind them, and plotted."""
    text = PROGRAM.read_text()
    wheel, bargain = "budget = 1_000_000\nexpected_spins = 100_000", "helpers = 8\n"
    assert wheel in text and bargain in text
    hard = tmp_path / "hard.toml"
    hard.write_text(text.replace(wheel, "budget = 30\nexpected_spins = 1", 1).replace(bargain, "helpers = 50\n", 1))
    report = asyncio.run(simulate(hard, ARCHETYPES, 240, 4, 11, start=START))
    s = report.summary()
    budget = s["lottery_budget"]["daily"]
    assert budget["budget"] == 30 and budget["spent"] <= 30 and budget["ran_out_on"] is not None
    said = " ".join(s["warnings"])
    assert f"the budget of wheel daily runs out on day" in said and f"{budget['spent']:,} of 30 spent" in said
    teapot = s["bargains"]["teapot"]
    assert teapot["reached_floor"] == 0 and teapot["expired"] >= 20
    assert f"0% of the bargains of campaign teapot reach the floor (0 of {teapot['expired']:,} ended)" in said
    page = render([report])
    assert "Lottery budget spent" in page and "What the games gave" in page


def test_a_seeded_draw_depends_on_its_key_alone_and_production_ignores_it() -> None:
    draws = seeded_draws(7)
    first = [draws(f"m-{n}:spin-1").randbelow(1_000_000) for n in range(20)]
    assert first == [seeded_draws(7)(f"m-{n}:spin-1").randbelow(1_000_000) for n in reversed(range(20))][::-1]
    assert first != [seeded_draws(8)(f"m-{n}:spin-1").randbelow(1_000_000) for n in range(20)]
    assert len({system_draws("m-1:spin-1").randbelow(2**64) for _ in range(5)}) == 5  # the key chooses nothing


def test_a_flash_sale_sells_its_stock_and_no_more_and_says_when(tmp_path: Path) -> None:
    text = PROGRAM.read_text()
    assert "stock = 100\nper_member_limit = 1\nprice_points = 100" in text
    small = tmp_path / "small.toml"
    small.write_text(text.replace("stock = 100\nper_member_limit = 1\nprice_points = 100",
                                  "stock = 3\nper_member_limit = 1\nprice_points = 0", 1))
    s = asyncio.run(simulate(small, ARCHETYPES, 120, 3, 11, start=START)).summary()
    assert s["games"]["flash:member-day:ok"] == 3 and s["games"]["flash:member-day:sold_out"] > 0
    assert s["flash_sold_out"] == {"member-day": s["start_day"]}  # the first day's claims took all three
    # What the day's claims were, sent or not (after the first sold_out, the rest are not sent).
    claims = s["flash_demand"]["member-day"]["claims"]
    assert s["flash_demand"]["member-day"]["units_left"] == 3  # all three sold on the first day
    assert claims >= s["games"]["flash:member-day:ok"] + s["games"]["flash:member-day:sold_out"] and claims >= 6
    assert f"flash sale member-day sells out on day 1 ({START.isoformat()}): {claims} members tried to claim its 3 units that day" \
        in s["warnings"]


def test_the_report_is_one_file_that_opens_offline(tmp_path: Path) -> None:
    report = run(60, 3, 5)
    page = render([report, report])
    assert page.startswith("<!doctype html>") and "Plotly" in page
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js is inlined, nothing is fetched
    assert "Members per tier" in page and "Quest completions" in page and 'class="diff"' not in page


def test_the_cli_writes_the_report_and_the_json(tmp_path: Path, capsys: Any) -> None:
    out, summary = tmp_path / "report.html", tmp_path / "summary.json"
    code = main(["simulate", str(PROGRAM), "--archetypes", str(ARCHETYPES), "--members", "50", "--days", "2",
                 "--seed", "3", "--out", str(out), "--json", str(summary)])
    assert code == 0 and out.stat().st_size > 1_000_000  # plotly.js inlined
    data = orjson.loads(summary.read_bytes())
    assert data["members"] == 50 and data["days"] == 2 and data["seed"] == 3
    assert "events/s" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit, args, said",
    [
        (None, ["--members", "0"], "--members must be from 1"),
        (None, ["--days", "0"], "--days must be from 1"),
        (None, ["--out", "/nonexistent-folder/report.html"], "cannot be written"),
        (None, ["--start", "2020-01-01"], "--start must be after today"),
        (None, ["--start", "soon"], "--start must be a date"),
        (("per_week = 2.0", "per_week = -2.0"), [], "archetypes.loyal.events.purchase.per_week"),
        (("churn_per_week = 0.005", "churn_per_week = 0.005\nvelocity = 3"), [], "archetypes.loyal.velocity"),
        (("events.login = { per_week = 6.0 }", "events.logon = { per_week = 6.0 }"), [],
         "archetypes.loyal.events.logon: the programme has no event type"),
        (('stars = { one_of = [4, 5] }', 'stars = { chance = 0.5 }'), [], "archetypes.loyal.events.review.data.stars"),
    ],
)
def test_a_run_that_cannot_work_is_refused_before_any(tmp_path: Path, capsys: Any, edit: Any, args: list[str],
                                                       said: str) -> None:
    archetypes = ARCHETYPES
    if edit is not None:
        archetypes = tmp_path / "archetypes.toml"
        text = ARCHETYPES.read_text()
        assert edit[0] in text
        archetypes.write_text(text.replace(edit[0], edit[1], 1))
    out = tmp_path / "report.html"
    code = main(["simulate", str(PROGRAM), "--archetypes", str(archetypes), "--members", "10", "--days", "1",
                 "--out", str(out), *args])
    assert code == 2 and said in capsys.readouterr().err
    assert not out.exists()


def test_shares_must_add_up(tmp_path: Path) -> None:
    path = tmp_path / "archetypes.toml"
    path.write_text(ARCHETYPES.read_text().replace("share = 0.15\nchurn_per_week = 0.005", "share = 0.25\nchurn_per_week = 0.005"))
    with pytest.raises(ConfigError) as info:
        load_population(path, load_program(PROGRAM))
    assert [(p.path, p.reason) for p in info.value.problems] == [("archetypes", "the shares add up to 1.1, not 1")]


def test_days_are_local_days_across_a_clock_change() -> None:
    """A day is from local midnight to local midnight: 25 hours when New York's clocks go back."""
    program = load_program(PROGRAM)
    source = PROGRAM.read_bytes().replace(b'timezone = "Asia/Shanghai"', b'timezone = "America/New_York"', 1)
    ny = compile_program(parse_program(source, "ny.toml"), source)
    start = date(2026, 10, 31)
    days = [local_midnight(ny, start + timedelta(days=d)) for d in range(4)]
    assert [b - a for a, b in zip(days, days[1:])] == [86_400_000, 90_000_000, 86_400_000]
    assert [ny.calendar.day(t)[0] for t in days] == ["20261031", "20261101", "20261102", "20261103"]
    assert local_midnight(program, start + timedelta(days=1)) - local_midnight(program, start) == 86_400_000


def test_compare_marks_what_a_programme_change_does(tmp_path: Path, capsys: Any) -> None:
    """Two points a yuan instead of one: the same population and start, more points issued, and
    the summary rows that differ marked in the report."""
    text = PROGRAM.read_text()
    rule = 'per = { field = "amount", every = 100, amount = 1 }      # 1 point per'
    assert rule in text
    doubled = tmp_path / "doubled.toml"
    doubled.write_text(text.replace(rule, 'per = { field = "amount", every = 100, amount = 2 }      # 2 points per', 1))
    out, summary = tmp_path / "compare.html", tmp_path / "compare.json"
    code = main(["simulate", str(PROGRAM), "--compare", str(doubled), "--archetypes", str(ARCHETYPES), "--members", "60",
                 "--days", "2", "--start", START.isoformat(), "--out", str(out), "--json", str(summary)])
    assert code == 0, capsys.readouterr().err
    before, after = orjson.loads(summary.read_bytes())
    assert before["start_day"] == after["start_day"] and before["events"] == after["events"]
    assert after["points"]["issued"] > before["points"]["issued"]
    page = out.read_text()
    marked = re.findall(r'<tr class="diff"><td>([^<]+)</td>', page)
    assert "points issued" in marked and "events" not in marked
