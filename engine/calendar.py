"""Local days and ISO weeks of a programme's time zone, as epoch-millisecond ranges.

Daily caps and daily/weekly quests key their counters by the period holding the event's time.
Working that out costs a time-zone conversion; events arrive in time order more or less, so
remembering the last day and week found answers almost every call from a comparison.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


class Calendar:
    __slots__ = ("tz", "_day", "_week", "_after", "_year")

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._day: tuple[int, int, str] = (0, 0, "")
        self._week: tuple[int, int, str] = (0, 0, "")
        # (start, end) of the day or year last asked about, the offset asked, the answer: every
        # points grant asks when its lot expires, and almost all ask about the same day.
        self._after: tuple[int, int, int, int] = (0, 0, 0, 0)
        self._year: tuple[int, int, int, int] = (0, 0, 0, 0)

    def day(self, at_ms: int) -> tuple[str, int]:
        """The local day holding ``at_ms`` as ("YYYYMMDD", end in epoch ms)."""
        start, end, label = self._day
        if not start <= at_ms < end:
            local = datetime.fromtimestamp(at_ms / 1000, self.tz)
            first = datetime(local.year, local.month, local.day, tzinfo=self.tz)
            start, end = _ms(first), _ms(first + timedelta(days=1))
            label = first.strftime("%Y%m%d")
            self._day = (start, end, label)
        return label, end

    def week(self, at_ms: int) -> tuple[str, int]:
        """The local ISO week (Monday first) holding ``at_ms`` as ("YYYYWnn", end in epoch ms)."""
        start, end, label = self._week
        if not start <= at_ms < end:
            local = datetime.fromtimestamp(at_ms / 1000, self.tz)
            year, week, weekday = local.isocalendar()
            first = datetime(local.year, local.month, local.day, tzinfo=self.tz) - timedelta(days=weekday - 1)
            start, end = _ms(first), _ms(first + timedelta(days=7))
            label = f"{year}W{week:02d}"
            self._week = (start, end, label)
        return label, end


    def days_after(self, at_ms: int, days: int) -> int:
        """The local midnight ``days`` days after the end of the day holding ``at_ms``."""
        start, end, asked, answer = self._after
        if start <= at_ms < end and asked == days:
            return answer
        local = datetime.fromtimestamp(at_ms / 1000, self.tz)
        first = datetime(local.year, local.month, local.day, tzinfo=self.tz)
        answer = _ms(first + timedelta(days=days + 1))
        self._after = (_ms(first), _ms(first + timedelta(days=1)), days, answer)
        return answer

    def year_end(self, at_ms: int, years_after: int = 0) -> int:
        """The local midnight that ends the calendar year ``years_after`` years after the one
        holding ``at_ms`` (1: the end of next year)."""
        start, end, asked, answer = self._year
        if start <= at_ms < end and asked == years_after:
            return answer
        year = datetime.fromtimestamp(at_ms / 1000, self.tz).year
        answer = _ms(datetime(year + years_after + 1, 1, 1, tzinfo=self.tz))
        self._year = (_ms(datetime(year, 1, 1, tzinfo=self.tz)), _ms(datetime(year + 1, 1, 1, tzinfo=self.tz)), years_after, answer)
        return answer


def _ms(moment: datetime) -> int:
    # Wall-clock arithmetic above (same tzinfo), then timestamp(): correct across DST changes.
    return int(moment.timestamp() * 1000)
