"""The calendar's remembered answers are the answers: asked in any order, across DST changes and
year ends, a Calendar answers what a fresh one would."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.calendar import Calendar

ZONES = ["Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe"]
# 2025-2028: DST changes and three year ends.
MOMENTS = st.integers(min_value=1_735_000_000_000, max_value=1_830_000_000_000)


@settings(max_examples=60, deadline=None)
@given(zone=st.sampled_from(ZONES), asks=st.lists(st.tuples(MOMENTS, st.integers(0, 400), st.integers(0, 2)), min_size=1, max_size=30))
def test_remembered_answers_equal_fresh_ones(zone: str, asks: list[tuple[int, int, int]]) -> None:
    tz = ZoneInfo(zone)
    calendar = Calendar(tz)
    for at_ms, days, years in asks:
        # Near neighbours too: the same day or year as the last ask, where the memory answers.
        for moment in (at_ms, at_ms + 1, at_ms + 3_600_000):
            assert calendar.days_after(moment, days) == Calendar(tz).days_after(moment, days)
            assert calendar.year_end(moment, years) == Calendar(tz).year_end(moment, years)


def test_a_year_end_is_local_midnight() -> None:
    tz = ZoneInfo("Asia/Shanghai")
    at = int(datetime(2026, 12, 31, 23, 59, tzinfo=tz).timestamp() * 1000)
    assert Calendar(tz).year_end(at, 1) == int(datetime(2028, 1, 1, tzinfo=tz).timestamp() * 1000)
    assert Calendar(tz).year_end(at + 60_000, 1) == int(datetime(2029, 1, 1, tzinfo=tz).timestamp() * 1000)


def test_every_date_is_computable_up_to_the_latest_clock() -> None:
    """At the latest moment a clock may show, in the zones furthest ahead and behind, a day, a week,
    the longest expiry in days and the end of next year are all computed (no year-10000 error)."""
    from engine.clock import LATEST_MS
    from engine.config import Points

    [longest_days] = [m.le for m in Points.model_fields["expiry_days"].metadata if hasattr(m, "le")]
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12", "Asia/Shanghai"):
        calendar = Calendar(ZoneInfo(zone))
        for at_ms in (LATEST_MS, LATEST_MS - 1):
            assert calendar.day(at_ms)[1] > at_ms and calendar.week(at_ms)[1] > at_ms
            assert calendar.days_after(at_ms, longest_days) > at_ms
            assert calendar.year_end(at_ms, 1) > at_ms
