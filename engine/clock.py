"""Time, passed in rather than read deep in the code.

Every rule takes ``now_ms``; the service asks one ``Clock`` for it. Tests and the designers'
simulator swap in a ``ManualClock`` and move days in microseconds.
"""

from __future__ import annotations

import time
from typing import Protocol

DAY_MS = 86_400_000


class Clock(Protocol):
    def now_ms(self) -> int: ...


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
