"""``make bench``'s SUMMARY from made-up measurements: each row's figures belong to its ratio."""

from __future__ import annotations

import re

import pytest

from loadtest.bench import HttpPair, Memory, Operations, median_by, median_pair, print_summary, summary_rows
from loadtest.clusterbench import ClusterRun
from loadtest.httpload import LoadResult
from loadtest.redisload import PipelineResult
from loadtest.servercost import CostRound, ServerCost


def pair(service_rps: float, baseline_rps: float) -> HttpPair:
    return HttpPair(baseline=LoadResult(requests_per_s=baseline_rps, p50_ms=1, p99_ms=2),
                    service=LoadResult(requests_per_s=service_rps, p50_ms=1, p99_ms=2))


#: The run the issue saw: each column's median is pair 1's figure (a 0.83x pair), while the median
#: ratio, 1.03x, is pair 2's.
PAIRS = [pair(7_916, 9_573), pair(7_210, 7_000), pair(12_000, 10_000)]


#: Server-cost rounds whose ratios to the floor have their medians in different rounds: purchase
#: 4.00x in round 1 (of 4, 3, 5), at its limits 10.00x in round 2 (of 15, 10, 5).
ROUNDS = (CostRound(award_us=60, floor_us=15, at_limits_us=225), CostRound(award_us=60, floor_us=20, at_limits_us=200),
          CostRound(award_us=50, floor_us=10, at_limits_us=50))


def rows_of(pairs: list[HttpPair]) -> dict[str, tuple[str, str, str]]:
    done = LoadResult(requests=10, counted=10, events=10, events_per_s=1_000, requests_per_s=100)
    rows = summary_rows(
        pairs,
        done,
        PipelineResult(replies=1_000, seconds=1.0, errors=0, sampled=0, applied=0),
        Memory(members=10, events=5, per_member_b=900, dedupe_usage_per_entry_b=40, dedupe_delta_per_entry_b=40,
               setnx_per_key_b=90),
        ServerCost(rounds=ROUNDS, duplicate_us=10, limits="made up"),
        Operations(spend=done, redeem=done),
        2_000.0,
        ClusterRun(single=[done], cluster=[done]),
    )
    return {r.figure: (r.value, r.baseline, r.ratio) for r in rows}


def test_the_median_row_prints_the_median_pairs_figures() -> None:
    """The req/s median row shows the service and baseline figures of the pair whose ratio is the median."""
    row = rows_of(PAIRS)["HTTP 1 event/request, req/s, median of 3 pairs"]
    assert row == ("7,210", "7,000", "1.03x")


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_the_median_pair_does_not_depend_on_the_order_run(order: tuple[int, int, int]) -> None:
    """Whichever order the pairs ran in, the median pair is the one with the middle ratio."""
    assert median_pair([PAIRS[i] for i in order]) is PAIRS[1]


def test_with_two_pairs_the_median_is_the_lower_one() -> None:
    """An even count has no middle pair: the lower of the two (a real pair, the stricter reading)."""
    low, high = pair(9_000, 10_000), pair(11_000, 10_000)
    assert rows_of([high, low])["HTTP 1 event/request, req/s, median of 2 pairs"] == ("9,000", "10,000", "0.90x")


def test_the_ratio_line_names_the_same_median(capsys: pytest.CaptureFixture[str]) -> None:
    """The per-pair ratio line above the table gives the median row's ratio as its median."""
    print_summary([], PAIRS)
    out = capsys.readouterr().out
    assert re.search(r"0\.83x, 1\.03x, 1\.20x; best 1\.20x, median 1\.03x", out), out


def test_the_floor_rows_print_the_median_rounds_figures() -> None:
    """Each floor-script row shows the member and floor us of the round whose ratio is its median."""
    rows = rows_of(PAIRS)
    assert rows["Valkey CPU per award / floor script (purchase)"] == ("60.0", "15.0", "4.00x")
    assert rows["Valkey CPU per award / floor script (programme at its limits)"] == ("200.0", "20.0", "10.00x")


def test_an_upper_bound_takes_the_higher_middle_of_an_even_count() -> None:
    """With two rounds, a ratio held to "<=" is read from the higher one (the stricter reading)."""
    low, high = CostRound(30, 10, 0), CostRound(50, 10, 0)
    assert median_by([high, low], lambda r: r.award_ratio, upper=True) is high
    assert median_by([high, low], lambda r: r.award_ratio) is low
