"""The one percentile every load report uses: nearest rank, rounding the rank up.

For ``n`` ascending values, the ``q`` quantile (0 <= q <= 1) is the value of rank
``ceil(q * n)`` (ranks count from 1; a rank of 0 reads as 1): the smallest value such that at
least a ``q`` share of the values are at or below it. It is always one of the measured values
(no interpolation), so a p99 is a latency that really happened, and for 100 values p99 is the
99th, not the maximum. This is the textbook definition (NIST's "nearest rank", Hyndman & Fan's
type 1 without the interpolation choices).

``q * n`` is computed on the decimal ``q`` is written as (0.07 as 7/100, not as the binary
float just above it), so that a rank that is a whole number on paper is not rounded up by float
noise: 0.07 of 100 values is rank 7, not 8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``ordered`` (ascending) by nearest rank; NaN when it is empty."""
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, not {q!r}")
    if not ordered:
        return math.nan
    rank = math.ceil(Fraction(repr(q)) * len(ordered))
    return ordered[max(rank, 1) - 1]
