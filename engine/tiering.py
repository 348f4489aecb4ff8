"""Tiers kept or lost: the pure part of ``[tier_policy]`` (``engine.config.TierPolicy``).

Under the default policy a tier is reached by lifetime XP and kept for good, and nothing here
runs: ``member.lua`` climbs on the ``xp`` it keeps anyway. Under a window, what qualifies (XP
earned, or the ``amount`` of spend events) is counted in the member's state hash, one field per
period (``tq:2026`` for a calendar year, ``tq:202612`` for a month of a rolling window, ``tq:all``
for a lifetime of spend), each expiring once no review can read it. ``member.lua`` reads the
window's fields with the state fields it reads anyway, climbs when their sum reaches the next
tier, and holds the tier reached until ``held_until`` (profile ``te``).

At ``te`` a ``tier`` job (``plan_review``) reviews it, as of ``te`` (a late scheduler changes
nothing): kept while the window reaches it, else held ``grace_days`` more (profile ``tg``: the
expiry the grace extends; reaching the tier again meanwhile keeps it), then dropped by at most
one level. Each review is an operation with the job's derived id, so a review run twice applies
once; a review whose ``te`` is no longer the member's (a climb moved it) does nothing. Each change
is a feed effect (``tier_up``, ``tier_kept``, ``tier_grace``, ``tier_down``) and an entry of the
member's tier log (state ``tl``: the last ``LOG_LENGTH`` changes, with the programme's hash).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgpack

from engine.calendar import Calendar
from engine.clock import DAY_MS

#: The tier log keeps this many changes (a member's tier changes a few times a year).
LOG_LENGTH = 20
#: A period's field outlives the last review that can read it by this much (a scheduler that was
#: down for weeks still reviews on what was counted).
FIELD_SLACK_MS = 62 * DAY_MS
#: The state field of the tier log.
LOG_FIELD = "tl"


@dataclass(slots=True)
class TierRules:
    """A compiled ``[tier_policy]`` other than the default."""

    spend: bool  # what qualifies: the amount of spend events (else XP)
    window: str  # "lifetime" | "year" | "rolling"
    months: int
    grace_ms: int
    calendar: Calendar
    version: str  # the programme's hash, written with every change in the tier log
    spend_events: frozenset[str]
    #: (start, end) of the period last asked about, and its answer: (field, field expiry,
    #: the window's fields, held until): almost every operation asks about the current month.
    _last: tuple[int, int, tuple[str, int, tuple[str, ...], int]] | None = field(default=None, repr=False)

    @property
    def reviewed(self) -> bool:
        """Whether a tier expires (and so has review jobs)."""
        return self.window != "lifetime"

    def period(self, at_ms: int) -> tuple[str, int, tuple[str, ...], int]:
        """For an operation at ``at_ms``: the field it counts in, that field's expiry (0: never),
        the fields of the window ending then (its own among them), and until when a tier reached
        then is held (0: for good)."""
        last = self._last
        if last is not None and last[0] <= at_ms < last[1]:
            return last[2]
        tz = self.calendar.tz
        local = datetime.fromtimestamp(at_ms / 1000, tz)
        answer: tuple[str, int, tuple[str, ...], int]
        if self.window == "lifetime":
            answer = ("tq:all", 0, ("tq:all",), 0)
            start, end = -(2**62), 2**62
        elif self.window == "year":
            start = _ms(datetime(local.year, 1, 1, tzinfo=tz))
            end = _ms(datetime(local.year + 1, 1, 1, tzinfo=tz))
            held = _ms(datetime(local.year + 2, 1, 1, tzinfo=tz))
            name = f"tq:{local.year}"
            # Read by the review at the end of next year (and its grace).
            answer = (name, held + self.grace_ms + FIELD_SLACK_MS, (name,), held)
        else:  # rolling: the answer holds for a day (a tier is held `months` months from the day's end)
            day = datetime(local.year, local.month, local.day, tzinfo=tz)
            start, end = _ms(day), _ms(day + timedelta(days=1))
            first = datetime(local.year, local.month, 1, tzinfo=tz)
            fields = tuple(f"tq:{_add_months(first, -k).strftime('%Y%m')}" for k in range(self.months))
            # A month is in every window ending within `months` months of its end.
            expires = _ms(_add_months(first, self.months + 1)) + self.grace_ms + FIELD_SLACK_MS
            answer = (fields[0], expires, fields, _ms(_add_months(day + timedelta(days=1), self.months)))
        self._last = (start, end, answer)
        return answer

    def review_fields(self, expiry_ms: int) -> tuple[str, ...]:
        """The fields a review at ``expiry_ms`` (or at the end of its grace) reads besides the
        current window's: the year the tier was held for (a rolling window's is the current one)."""
        if self.window != "year":
            return ()
        year = datetime.fromtimestamp((expiry_ms - self.grace_ms - 1) / 1000, self.calendar.tz).year
        return (f"tq:{year}",)

    def kept_until(self, review_ms: int) -> int:
        """Until when a tier kept (or the one below, after a drop) at a review at ``review_ms`` is
        held: the end of the year after the one reviewed, or ``months`` months on."""
        if self.window == "year":
            year = datetime.fromtimestamp((review_ms - self.grace_ms - 1) / 1000, self.calendar.tz).year
            return _ms(datetime(year + 2, 1, 1, tzinfo=self.calendar.tz))
        return _ms(_add_months(datetime.fromtimestamp(review_ms / 1000, self.calendar.tz), self.months))

    def script_arg(self, at_ms: int, increment: int, review_ms: int = 0) -> bytes:
        """member.lua's ARGV[6] (its header has the layout)."""
        own, expires, fields, held = self.period(at_ms)
        if review_ms:  # a review counts the window that ends with the expiry (its last moment's)
            fields = self.period(review_ms - 1)[2]
        values: list[object] = [1 if self.spend else 0, increment, own, expires, held, self.grace_ms, self.version,
                                len(fields), *fields]
        if review_ms:
            extra = [f for f in self.review_fields(review_ms) if f not in fields]
            values += [review_ms, self.kept_until(review_ms), len(extra), *extra]
        return msgpack.packb(values)[_header(len(values)):]


def _header(n: int) -> int:
    return 1 if n < 16 else 3 if n < 65536 else 5


def _add_months(moment: datetime, months: int) -> datetime:
    """The same day ``months`` months on, the last day of the month when it has fewer days."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    days = (datetime(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
    return moment.replace(year=year, month=month, day=min(moment.day, days))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)

