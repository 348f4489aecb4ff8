"""The wheel's rules, pure: the draw, the stock released so far, the expected cost.

The draw takes a number in ``[0, PPM)`` from the caller (``secrets`` in the service, a seed in
tests and the simulator), so every rule here is a function of plain data, property-tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from games.lottery.config import PPM, Wheel


def draw(odds_ppm: Sequence[int], u: int) -> int:
    """The index of the prize ``u`` (uniform in ``[0, sum(odds_ppm))``) lands on: prize ``i``
    covers ``odds_ppm[i]`` consecutive values, so it is drawn with exactly its published odds."""
    if not 0 <= u < sum(odds_ppm):
        raise ValueError(f"u={u} is outside [0, {sum(odds_ppm)})")
    for i, share in enumerate(odds_ppm):
        if u < share:
            return i
        u -= share
    raise AssertionError("unreachable: u < sum(odds_ppm)")  # pragma: no cover


def released(stock: int, day_start_ms: int, day_end_ms: int, now_ms: int) -> int:
    """Units of a stock released evenly over a day by ``now_ms``: ``stock`` x the share of the
    day gone, rounded up (the first unit is there at the first instant), never more than the stock."""
    if now_ms <= day_start_ms:
        return min(stock, 1) if now_ms == day_start_ms else 0
    span = day_end_ms - day_start_ms
    gone = min(now_ms - day_start_ms, span)
    return min(stock, -(-stock * gone // span))


def expected_cost(wheel: Wheel, spins: int) -> Fraction:
    """What ``spins`` spins are expected to cost: each prize's expected hits, capped by its stock
    (what is not there becomes the fallback), times its cost."""
    total = Fraction(0)
    for prize in wheel.prizes:
        hits = Fraction(prize.ppm * spins, PPM)
        if prize.stock is not None:
            hits = min(hits, Fraction(prize.stock))
        total += hits * prize.cost
    return total
