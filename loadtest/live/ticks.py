"""A fixed send rate as bursts every tick, and what the sender reports of its measured window.

The poster and the baseline server send the same way: ``rate`` a second, in a burst every
``tick_ms`` (the fractions carried to the next tick), warm-up ticks first, then the measured
window. The sender says when the window starts and ends (``ready``) so that the parent measures
CPU over the same span, and afterwards how many it sent in the window, at what rate, and how
late its bursts went out (``done``): a sender that falls behind is reported, not hidden.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from loadtest.stats import percentile

#: Time between ``ready`` and the first burst, for the sender to build it.
LEAD_NS = 200_000_000


class Burst(NamedTuple):
    tick: int
    scheduled_ns: int  # when it is due (it goes out then or later)
    size: int  # messages in it
    measured: bool  # inside the measured window, not warm-up


class Ticks:
    """The bursts of one run, from ``LEAD_NS`` after it is made."""

    def __init__(self, rate: float, warmup_s: float, duration_s: float, tick_ms: float) -> None:
        self.rate = rate
        self.tick_ns = int(tick_ms * 1e6)
        self.tick_s = self.tick_ns / 1e9
        self.warm_ticks = round(warmup_s / self.tick_s)
        self.total_ticks = self.warm_ticks + round(duration_s / self.tick_s)
        self.start_ns = time.time_ns() + LEAD_NS
        self.t0_ns = self.start_ns + self.warm_ticks * self.tick_ns  # the measured window
        self.t1_ns = self.start_ns + self.total_ticks * self.tick_ns

    def ready(self) -> dict[str, Any]:
        """The report that tells the parent when the window is."""
        return {"event": "ready", "start_ns": self.start_ns, "t0_ns": self.t0_ns, "t1_ns": self.t1_ns}

    def __iter__(self) -> Iterator[Burst]:
        carry = 0.0
        for k in range(self.total_ticks):
            carry += self.rate * self.tick_s
            n = int(carry)
            carry -= n
            if n:
                yield Burst(k, self.start_ns + k * self.tick_ns, n, k >= self.warm_ticks)


class SendLog:
    """The measured window's bursts: messages, sequence numbers, send times, lateness."""

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self.sent = 0
        self.seq_lo = 0  # first and last sequence number sent in the window
        self.seq_hi = 0
        self._lags_ms: list[float] = []
        self._first_ns = 0
        self._last_ns = 0

    def burst(self, burst: Burst, first_seq: int, sent_ns: int) -> None:
        """A measured burst of sequence numbers ``first_seq``.., sent at ``sent_ns``."""
        self.seq_lo = self.seq_lo or first_seq
        self.seq_hi = first_seq + burst.size - 1
        self.sent += burst.size
        self._lags_ms.append((sent_ns - burst.scheduled_ns) / 1e6)
        self._first_ns = self._first_ns or sent_ns
        self._last_ns = sent_ns

    def done(self, **extra: Any) -> dict[str, Any]:
        """The report of the window: sent, the span and rate achieved, the send lag."""
        lags = sorted(self._lags_ms)
        span_s = (self._last_ns - self._first_ns) / 1e9 + self.tick_s
        return {
            "event": "done",
            "sent": self.sent,
            "seq_lo": self.seq_lo,
            "seq_hi": self.seq_hi,
            **extra,
            "window_s": span_s,
            "achieved_rate": self.sent / span_s if span_s > 0 else 0.0,
            "send_lag_p50_ms": percentile(lags, 0.5),
            "send_lag_p99_ms": percentile(lags, 0.99),
            "send_lag_max_ms": lags[-1] if lags else math.nan,
        }
