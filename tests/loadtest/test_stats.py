"""The load reports' one percentile: nearest rank with the rank rounded up, checked by hand."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.stats import percentile

ONE_TO_HUNDRED = [float(v) for v in range(1, 101)]


@pytest.mark.parametrize(
    ("ordered", "q", "expected"),
    [
        # 1..100: the q quantile is the value 100q, rounded up.
        (ONE_TO_HUNDRED, 0.50, 50),
        (ONE_TO_HUNDRED, 0.90, 90),
        (ONE_TO_HUNDRED, 0.99, 99),  # the 99th value, not the maximum (a floored index gives 100)
        (ONE_TO_HUNDRED, 0.999, 100),  # rank ceil(99.9) = 100
        (ONE_TO_HUNDRED, 1.0, 100),
        (ONE_TO_HUNDRED, 0.0, 1),  # rank 0 reads as the first value
        (ONE_TO_HUNDRED, 0.07, 7),  # 0.07 * 100 is 7.000000000000001 in floats: still rank 7
        (ONE_TO_HUNDRED, 0.29, 29),  # and 28.999999999999996: still rank 29
        # Five values: ranks ceil(5q).
        ([15, 20, 35, 40, 50], 0.05, 15),  # rank ceil(0.25) = 1
        ([15, 20, 35, 40, 50], 0.30, 20),  # rank ceil(1.5) = 2
        ([15, 20, 35, 40, 50], 0.40, 20),  # rank 2 exactly
        ([15, 20, 35, 40, 50], 0.50, 35),  # rank ceil(2.5) = 3
        ([15, 20, 35, 40, 50], 1.00, 50),
        # Ten values with ties.
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.25, 7),  # rank ceil(2.5) = 3
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.50, 8),  # rank 5
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.75, 15),  # rank ceil(7.5) = 8
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.99, 20),  # rank ceil(9.9) = 10
        # A thousand values: p99 is the 990th, p99.9 the 999th.
        ([float(v) for v in range(1, 1001)], 0.99, 990),
        ([float(v) for v in range(1, 1001)], 0.999, 999),
        # One value is every quantile.
        ([4.5], 0.0, 4.5),
        ([4.5], 0.5, 4.5),
        ([4.5], 1.0, 4.5),
    ],
)
def test_nearest_rank_rounded_up(ordered: list[float], q: float, expected: float) -> None:
    """The q quantile of n ascending values is the value of rank ceil(q * n)."""
    assert percentile(ordered, q) == expected


def test_no_values_have_no_percentile() -> None:
    """An empty run reports NaN (printed as n/a), not an error and not zero."""
    assert math.isnan(percentile([], 0.99))


@pytest.mark.parametrize("q", [-0.01, 1.01, 99.0, math.nan])
def test_quantile_outside_zero_to_one_is_refused(q: float) -> None:
    """A percentage passed where a fraction belongs (99 for 0.99) is an error, not the maximum."""
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile(ONE_TO_HUNDRED, q)


@given(
    st.lists(st.integers(-1000, 1000), min_size=1, max_size=300).map(sorted),
    st.integers(0, 1000).map(lambda per_mille: per_mille / 1000),
)
def test_the_smallest_value_with_a_q_share_at_or_below_it(ordered: list[int], q: float) -> None:
    """At least a q share of the values are at or below it, and fewer than a q share below it."""
    value = percentile(ordered, q)
    assert value in ordered
    share = Fraction(repr(q)) * len(ordered)
    assert sum(1 for v in ordered if v <= value) >= share
    if q > 0:
        assert sum(1 for v in ordered if v < value) < share
