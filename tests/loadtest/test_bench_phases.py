"""``make bench --only``: the phases chosen and those their figures need; phase [8]'s rows from
made-up runs (each a ``GameLoad``: its rate, its ratio to the award path, its target), and
phase [9]'s (busy against idle pairs, the lifecycle's bytes)."""

from __future__ import annotations

import pytest

from loadtest import gamesbench
from loadtest.bench import PHASES, parse_args, phases_of, summary_rows
from loadtest.gamesbench import Games, GameLoad
from loadtest.httpload import LoadResult
from loadtest.schedbench import LifecycleMemory, SchedPair, Scheduled, at


def test_every_phase_runs_without_only() -> None:
    assert parse_args([]).phases == frozenset(PHASES)


@pytest.mark.parametrize(("only", "phases"), [("8", {1, 8}), ("6,8", {1, 6, 8}), ("3", {2, 3}), ("4, 5", {4, 5}), ("9", {9})])
def test_only_adds_what_the_figures_are_ratios_to(only: str, phases: set[int]) -> None:
    assert phases_of(only) == phases


@pytest.mark.parametrize("only", ["10", "x", ","])
def test_only_refuses_what_is_no_phase(only: str) -> None:
    with pytest.raises(ValueError, match="--only"):
        phases_of(only)


def test_the_games_rows_hold_each_rate_to_its_target() -> None:
    """Claims count 2xx answers, refusals count their 409s (not errors), check-ins every answer;
    each row's ratio is to the award path's req/s, marked MET or MISSED by its own target."""
    claims, gone, checkins = gamesbench.LOADS[:3]
    games = Games(award_rps=1_000, runs=[
        (claims, LoadResult(requests=900, counted=900, requests_per_s=900, window_s=1)),
        (gone, LoadResult(errors=2_500, statuses={"409": 2_500}, window_s=1)),
        (checkins, LoadResult(requests=700, counted=10, requests_per_s=700, window_s=1)),
    ])
    rows = {figure: (value, baseline, ratio, target, verdict) for figure, value, baseline, ratio, target, verdict
            in games.rows()}
    assert rows[claims.figure] == ("900", "1,000", "0.90x", ">= 0.80x", "MET")
    assert rows[gone.figure] == ("2,500", "1,000", "2.50x", ">= 2.00x", "MET")
    assert rows[checkins.figure] == ("700", "1,000", "0.70x", ">= 0.80x", "MISSED")
    assert (games.errors, games.not_applied) == (0, 0)  # duplicate check-ins are not failures


def test_another_game_is_one_more_load() -> None:
    """A row for a route not in ``LOADS`` needs only its spec: the load it sends and its row."""
    spin = GameLoad("lottery spins", "HTTP lottery spins, req/s", "/v1/games/lottery/daily/spin", 0.8, seed=14)
    spec = spin.spec(host="127.0.0.1", port=1, run_id="r")
    assert (spec.mode, spec.path, spec.id_body) == ("member", "/v1/games/lottery/daily/spin", True)
    games = Games(award_rps=1_000, runs=[(spin, LoadResult(requests=10, counted=10, requests_per_s=850, window_s=1))])
    assert games.rows() == [("HTTP lottery spins, req/s", "850", "1,000", "0.85x", ">= 0.80x", "MET")]


def test_a_summary_of_some_phases_has_their_rows_only() -> None:
    """With phases left out (None), the summary has the rows of those that ran, and the error row."""
    claims = gamesbench.LOADS[0]
    games = Games(award_rps=1_000, runs=[(claims, LoadResult(requests=5, counted=4, requests_per_s=5, window_s=1))])
    rows = summary_rows([], None, None, None, None, None, None, None, games=games)
    assert [r.figure for r in rows] == [claims.figure, "HTTP errors (non-2xx) and events not applied"]
    assert rows[-1].value == "1"  # one claim answered 2xx without applying


def sched_pair(busy_rps: float, idle_rps: float, jobs: int = 10_000) -> SchedPair:
    return SchedPair(idle=LoadResult(requests=10, counted=10, requests_per_s=idle_rps),
                     busy=LoadResult(requests=10, counted=9, requests_per_s=busy_rps),
                     waiting_at_start=1_000_000, waiting_at_end=1_000_000 - jobs, window_s=10.0)


def test_the_scheduler_rows_print_the_median_pairs_figures() -> None:
    """Busy over idle, of the pair whose ratio is the median (the lower middle of an even count),
    beside the jobs that pair's busy window ran; the lifecycle's bytes a member; not-applied awards
    of both runs counted in the error row."""
    pairs = [sched_pair(950, 1_000, 30_000), sched_pair(800, 1_000, 20_000), sched_pair(1_200, 1_000)]
    sched = Scheduled(1_000_000, pairs, LifecycleMemory(members=100, jobs=400, bytes=20_000))
    rows = {r.figure: (r.value, r.baseline, r.ratio, r.target, r.verdict)
            for r in summary_rows([], None, None, None, None, None, None, None, sched=sched)}
    assert rows["HTTP 1 event/request, scheduler with 1,000,000 due jobs / idle, req/s, median of 3 pairs"] == (
        "950", "1,000", "0.95x", ">= 0.90x", "MET")
    assert rows["Scheduler jobs run/s beside the award path (that pair's window)"][0] == "3,000"
    assert rows["Lifecycle bytes per member (16 job sets, 4.0 jobs a member)"][0] == "200"
    assert rows["HTTP errors (non-2xx) and events not applied"][0] == "3"
    two = Scheduled(1_000_000, pairs[:2])
    assert two.median_pair() is pairs[1] and two.rows()[0][-1] == "MISSED"


def test_the_backlog_at_a_time_is_read_between_samples() -> None:
    samples = [(0.0, 1_000), (1.0, 800), (2.0, 400)]
    assert [at(samples, t) for t in (-1.0, 0.5, 1.0, 1.75, 3.0)] == [1_000, 900, 800, 500, 400]
