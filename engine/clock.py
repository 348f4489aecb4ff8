"""Time, passed in rather than read deep in the code.

Every rule takes ``now_ms``; the service asks one ``Clock`` for it. Tests and the designers'
simulator swap in a ``ManualClock`` and move days in microseconds; ``rekindle serve --dev-clock``
runs on an ``OffsetClock`` that a rehearsal moves forward through ``POST /v1/admin/clock``.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

DAY_MS = 86_400_000

#: The latest moment a clock may show: 2999-12-31T23:59:59.999Z. Every date the engine works out
#: from "now" stays inside what Python's datetime holds (year 9999) from there with ages of
#: margin: a lot's expiry (the end of next year, or up to 3,650 days on, engine/calendar.py),
#: local days and ISO weeks in any zone, the jobs scheduled at those times.
LATEST_MS = 32_503_679_999_999
LATEST_ISO = "2999-12-31T23:59:59.999Z"


class Clock(Protocol):
    def now_ms(self) -> int: ...


@runtime_checkable
class SettableClock(Protocol):
    """A clock that can be moved (the dev clock, a test's): the admin clock route needs one."""

    def now_ms(self) -> int: ...

    def set(self, now_ms: int) -> None: ...


class SystemClock:
    """Wall-clock time in integer epoch milliseconds."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, now_ms: int) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        return self._now_ms

    def set(self, now_ms: int) -> None:
        self._now_ms = now_ms

    def advance(self, ms: int) -> None:
        self._now_ms += ms


class OffsetClock:
    """System time plus an offset: the dev clock, which keeps running once moved.

    It only moves forward. Everything stored was written at the times this clock gave (dedupe
    buckets, quest periods, lots, jobs already run); taking it back would make operations look
    older than what they come after. The offset lives in this process only (which is why
    ``--dev-clock`` takes one worker), so a restart is back at real time: a rehearsal that starts
    over starts on a fresh data folder (or key prefix) too.
    """

    def __init__(self) -> None:
        self._offset_ms = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self._offset_ms

    def set(self, now_ms: int) -> None:
        """Move to ``now_ms``; ValueError if that is earlier than now or past ``LATEST_MS``."""
        if now_ms < self.now_ms():
            raise ValueError("the dev clock only moves forward")
        if now_ms > LATEST_MS:
            raise ValueError(f"the dev clock goes no later than {LATEST_ISO}")
        self._offset_ms = now_ms - time.time_ns() // 1_000_000
