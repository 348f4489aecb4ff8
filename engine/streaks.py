"""Check-in streaks, the pure rules: what a check-in or a make-up does to a member's streak.

``member.lua`` applies the same rules to the state it stores (``streak`` in its plan), because
the outcome depends on that state; this module is the rules as plain Python, so they can be read,
reasoned about and property-tested without a server, and a test holds the script to them.

Days are whole local days of the programme's time zone, numbered (``Calendar.day_number``). A
streak counts consecutive days ending at the last day checked in. Twice a day is one check-in
(the check-in's operation id is derived from its day, so the second is a duplicate). One missed
day between two runs can be repaired by a make-up, which joins the runs; a make-up may also
repair the day after the last one while today is not yet checked in. A reward is due when the
streak reaches one of the programme's thresholds (3, 7, 30 days...) not yet rewarded in the run,
so joining two runs never pays a threshold twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class StreakState(NamedTuple):
    last: int = 0  # the last day checked in (or made up); 0: never
    current: int = 0  # consecutive days ending at ``last``
    longest: int = 0
    gap: int = 0  # the one missed day between the run before and this one, while it can be made up
    before: int = 0  # the length of the run before the gap
    paid: int = 0  # the highest threshold rewarded in the current run
    before_paid: int = 0  # ... and in the run before the gap

    def pack(self) -> str:
        return ":".join(map(str, self))

    @classmethod
    def unpack(cls, raw: str | None) -> "StreakState":
        return cls(*map(int, raw.split(":"))) if raw else cls()


class Advance(NamedTuple):
    state: StreakState
    rewards: tuple[int, ...]  # thresholds reached now, ascending
    refusal: str = ""  # not_missed | too_old | out_of_order; the state is then unchanged


def _rewarded(state: StreakState, thresholds: Sequence[int]) -> Advance:
    due = tuple(t for t in sorted(thresholds) if state.paid < t <= state.current)
    paid = max(due, default=state.paid)
    return Advance(state._replace(paid=paid, longest=max(state.longest, state.current)), due)


def check_in(state: StreakState, day: int, thresholds: Sequence[int]) -> Advance:
    """Check in on ``day``; a day before the last one checked in is refused."""
    if state.last and day < state.last:
        return Advance(state, (), "out_of_order")
    if day == state.last:
        return Advance(state, ())
    if state.last and day == state.last + 1:
        nxt = state._replace(last=day, current=state.current + 1)
    elif state.last and day == state.last + 2:  # one day missed: repairable
        nxt = StreakState(day, 1, state.longest, day - 1, state.current, 0, state.paid)
    else:
        nxt = StreakState(day, 1, state.longest)
    return _rewarded(nxt, thresholds)


def make_up(state: StreakState, day: int, today: int, max_age_days: int, thresholds: Sequence[int]) -> Advance:
    """Repair the missed ``day`` (as of ``today``): the day after the last one (today not yet
    checked in), or the one day between two runs, which joins them."""
    if day >= today or (state.last and day <= state.last and day != state.gap):
        return Advance(state, (), "not_missed")
    if day < today - max_age_days:
        return Advance(state, (), "too_old")
    if state.last and day == state.last + 1:
        return _rewarded(state._replace(last=day, current=state.current + 1), thresholds)
    if state.gap and day == state.gap:
        joined = state._replace(
            current=state.before + 1 + state.current, gap=0, before=0,
            paid=max(state.paid, state.before_paid), before_paid=0,
        )
        return _rewarded(joined, thresholds)
    return Advance(state, (), "not_missed")  # never checked in, or more than one day missing
