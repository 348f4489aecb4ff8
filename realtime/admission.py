"""Admission control: a bounded amount of work in flight per process, shed on purpose past it.

When arrivals outrun what one process can finish, an unbounded service takes every request and
lets them all wait on one another: latency grows for everyone until clients time out and retry,
adding load. Here a process admits work while what it holds in flight stays under a limit, and
answers the rest at once, cheaply, with "come back later". The shop retries an award by its id,
so a refused award is delayed, never lost and never doubled.

**Kinds and thresholds.** One pool per process, counted in *weight* (an award request weighs its
events: 1 for a single event, ``len(events)`` for a batch; every other request weighs 1):

- ``award``: what changes a member and is retried by id (``POST /v1/events``, spends, coupon
  uses, redemptions) and profile ``PUT``\\s (idempotent): admitted while the weight in flight, all
  kinds together, stays within ``REKINDLE_MAX_INFLIGHT`` (default 64).
- ``read`` (``GET /v1/members/{id}``, ``GET /v1/me``, dry runs) and ``replay`` (a live-feed
  socket's replay, when it opens or on a ``resume`` frame): admitted only while the same total
  stays within ``REKINDLE_MAX_INFLIGHT_READS`` (default half of it). Under pressure the pool
  fills past the lower threshold first, so reads and replays are refused while awards are still
  taken: they are shed first, and what they leave free goes to awards.
- Never shed: ``/healthz`` (a load balancer must tell "busy" from "down"), ``/metrics`` (how an
  operator sees the overload; scraped at a fixed, low rate, so never its cause), tokens and the
  admin routes (rare, cheap, and needed to act on an incident).
- A heavy request, one weighing more than half its limit (a 1,000-event batch on a limit of
  512), is admitted while the pool is at most half full and then counts as at most the whole
  limit: late under load, never starved by a stream of small requests (were it admitted only
  into an empty pool, steady single events would keep it out for ever). Lighter batches are
  admitted like any request. ``REKINDLE_MAX_INFLIGHT=0`` turns the gate
  off (capacity benchmarks: four 1,000-event batches at once exceed any limit that keeps single
  events fast).
- Sizing: about the events a second one process sustains times the queueing delay one accepts
  (on a 2-core machine, ~6,000 single events/s x 10 ms gives the default 64). Measured by
  ``make bench-overload`` (1,024 connections posting without pause, each waiting its Retry-After
  when refused; unloaded p99 1.5 ms): shedding off, p99 of the accepted 1,104 ms; limit 512, 192
  ms (the pool barely fills: the queue forms in front of the handlers); 64, 31 ms; 32, 18 ms; 16,
  10 ms, at 6,000-8,000 accepted a second. The limits are per process, so ``--workers N`` admits
  N times as much.

**Refusals.** HTTP: ``429`` with the error shape of ``realtime/errors.py``
(``{"error": {"code": "overloaded", "message": ...}}``) and ``Retry-After`` in whole seconds:
``n`` or ``2n`` at random, so that clients refused together do not come back together, where ``n``
is 1 while refusals are rare and grows with the overload: the requests the process refused over
the last second divided by those it admitted (the seconds it needs to take them back at the rate
it takes work), up to 30. Under a sustained crowd a fixed 1-2 s brings every refused request back
with the next arrivals, and the process ends up spending itself on refusing retries. Nothing was read from
or written to the store: the same request may be sent again as is. A live-feed socket whose
replay is refused is closed with code ``1013`` ("Try Again Later", RFC 6455's registry, the code
this service already uses for "reconnect shortly"), reason ``overloaded; reconnect after N s
with ?since=<last id seen>``: the client reconnects after that delay and resumes from the last
id it saw, losing nothing. A ``resume`` frame refused the same way closes the socket the same
way, since after a rewind only a replay can put it back in order.

**Where the gate stands, and why there.** In the handlers (thin ``with admit(...)`` hooks), not
in an ASGI middleware: a batch's weight is its number of events, known exactly once the body is
read (``orjson.loads``, C speed) and before the costly part (per-event parsing and planning in
Python, then the store); a middleware may not read bodies and would have to guess from
``Content-Length``, and would repeat the route table to classify paths. Each handler
authenticates first, as every handler does, so a bad key is a 401 whatever the load; then reads
its (bounded) body, so no ticket is held while a slow client uploads; then is admitted, before
any domain work. The events route, which a spike is made of, first asks whether the pool could
take any request at all (``refuse_if_full``) and refuses before reading and parsing the body when
it could not. Sockets are gated around the replay only (the store's read and the frames made
of it): an open, idle socket costs little, its replay is the work. (A ``?token=`` socket without
``since`` reads where the feed ends before its accept: one small script call, not gated.)

**Accepted means finished.** Once admitted, a request runs to its end: Starlette does not cancel
a plain handler when its client disconnects (only streaming responses listen for that), and a
ticket is released in ``finally``. (A shutdown past uvicorn's graceful timeout is the one
exception; a member operation is atomic in its script, and a retry by id completes the rest.)

The core (``Admission``) is plain code over counters, tested without a server; ``admit`` is the
shell that counts in Prometheus and raises the HTTP layer's ``Overloaded``.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from starlette.requests import HTTPConnection

from realtime import metrics
from realtime.errors import Overloaded

RETRY_AFTER_S = 1  # the least Retry-After: this or twice this, at random (integer seconds, as HTTP has them)
MAX_RETRY_AFTER_S = 30  # the most a refusal asks a client to wait before its jitter (at most twice this)


class Kind(enum.Enum):
    """What a request does, which decides its threshold (see the module docstring)."""

    AWARD = "award"  # changes a member; retried by id
    READ = "read"  # a snapshot or a dry run: shed first
    REPLAY = "replay"  # a live-feed socket's replay: shed first

    # A member is a singleton, so identity is its equality: hash by identity, in C. Enum's own
    # __hash__ is Python (hash of the name), and a request looks its kind up about nine times.
    __hash__ = object.__hash__


#: The kinds refused at the lower threshold.
SHED_FIRST = frozenset({Kind.READ, Kind.REPLAY})


@dataclass(frozen=True, slots=True)
class Limits:
    """Most weight in flight, all kinds together, under which each kind is admitted."""

    awards: int  # 0: no limit at all (the gate is off)
    reads: int  # for reads and replays; 1..awards when awards > 0

    def __post_init__(self) -> None:
        if self.awards < 0:
            raise ValueError("the award limit must be 0 (off) or more")
        if self.awards and not 1 <= self.reads <= self.awards:
            raise ValueError(f"the read limit must be 1 to {self.awards} (the award limit)")

    def of_kind(self, kind: Kind) -> int:
        """``kind``'s threshold; 0 (no limit) for every kind when the gate is off."""
        if not self.awards:
            return 0
        return self.reads if kind in SHED_FIRST else self.awards


class Ticket:
    """One admitted request's share of the pool; give it back with ``Admission.leave``."""

    __slots__ = ("kind", "weight", "held")

    def __init__(self, kind: Kind, weight: int) -> None:
        self.kind = kind
        self.weight = weight
        self.held = True


class Admission:
    """The pool of one process: what is in flight, by kind, and what was admitted and shed.

    Single-threaded by design (one event loop): ``try_enter`` and ``leave`` never await, so no
    request can slip between the check and the count.
    """

    __slots__ = (
        "limits", "inflight", "inflight_by", "admitted", "shed", "_limit_of", "_rng", "_now",
        "_second", "_second_admitted", "_second_shed", "_last_admitted", "_last_shed",
    )  # fmt: skip

    def __init__(
        self, limits: Limits, rng: random.Random | None = None, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self.inflight = 0  # weight held by all kinds together: what the thresholds compare
        self.inflight_by: dict[Kind, int] = dict.fromkeys(Kind, 0)
        self.admitted: dict[Kind, int] = dict.fromkeys(Kind, 0)  # requests, not weight
        self.shed: dict[Kind, int] = dict.fromkeys(Kind, 0)
        self._limit_of = {kind: limits.of_kind(kind) for kind in Kind}
        self._rng = rng or random.Random()
        # Requests admitted and shed in the current second and in the one before it (all kinds):
        # what Retry-After is sized from.
        self._now = now
        self._second = math.floor(now())
        self._second_admitted = self._second_shed = 0
        self._last_admitted = self._last_shed = 0

    def _roll(self) -> None:
        """Move the per-second tallies on when a new second has begun."""
        second = math.floor(self._now())
        if second != self._second:
            if second == self._second + 1:
                self._last_admitted, self._last_shed = self._second_admitted, self._second_shed
            else:  # a quiet second or more in between: nothing was refused just before now
                self._last_admitted = self._last_shed = 0
            self._second = second
            self._second_admitted = self._second_shed = 0

    def _count(self, shed: bool) -> None:
        self._roll()
        if shed:
            self._second_shed += 1
        else:
            self._second_admitted += 1

    def try_enter(self, kind: Kind, weight: int = 1) -> Ticket | None:
        """A ticket if ``weight`` more fits under ``kind``'s threshold (or nothing is in flight);
        None, counted as shed, if not."""
        if weight < 1:
            raise ValueError("a request weighs at least 1")
        limit = self._limit_of[kind]
        if limit:
            half = max(1, limit // 2)
            if weight > half:
                # Heavy (a big batch): admitted while the pool is at most half full, counted as
                # at most the whole limit. Late under load, never starved by a stream of small ones.
                fits = self.inflight <= half
                weight = min(weight, limit)
            else:
                fits = not self.inflight or self.inflight + weight <= limit
            if not fits:
                self.shed[kind] += 1
                self._count(shed=True)
                return None
            self._count(shed=False)  # the gate off counts nothing: it never refuses, so never says when
        self.inflight += weight
        self.inflight_by[kind] += weight
        self.admitted[kind] += 1
        return Ticket(kind, weight)

    def refuses_any(self, kind: Kind) -> bool:
        """True, counted as shed, if not even the lightest request of ``kind`` would be admitted
        now: the pool is full, so the request can be refused before its body is read or parsed."""
        limit = self._limit_of[kind]
        if not limit or not self.inflight or self.inflight + 1 <= limit:
            return False
        self.shed[kind] += 1
        self._count(shed=True)
        return True

    def leave(self, ticket: Ticket) -> None:
        """Give the ticket's weight back; a second call for the same ticket changes nothing."""
        if not ticket.held:
            return
        ticket.held = False
        self.inflight -= ticket.weight
        self.inflight_by[ticket.kind] -= ticket.weight

    def retry_after_s(self) -> int:
        """Seconds to suggest to a refused client: as long as the process needs to take the
        requests it refused over the last second at the rate it admitted them, jittered so that
        a refused crowd spreads out.

        A fixed delay holds only while the overload is brief: under a sustained one, every
        refused request comes back after the same second or two together with the new arrivals,
        the refusals pile up faster than they drain, and the process spends itself refusing
        retries. Sized by the ratio, the retries of a crowd twice the capacity come back over two
        seconds or more, of one ten times over ten: the delay grows with the overload (up to
        ``MAX_RETRY_AFTER_S``) and falls back to 1-2 s once refusals stop."""
        self._roll()
        base = RETRY_AFTER_S
        if self._last_shed:
            base = min(MAX_RETRY_AFTER_S, max(base, math.ceil(self._last_shed / max(1, self._last_admitted))))
        return self._rng.randint(base, 2 * base)


def events_weight(body: Any) -> int:
    """An events request's weight from its parsed body: a batch weighs its events (1 at least;
    a malformed batch weighs 1 and is refused by validation), anything else 1."""
    if isinstance(body, dict):
        events = body.get("events")
        if isinstance(events, list) and events:
            return len(events)
    return 1


# --- the shell: Prometheus, and the error the HTTP layer maps to 429 -------------------------------

_SHED = {kind: metrics.SHED.labels(kind.value) for kind in Kind}  # present at 0 from the start
_INFLIGHT = {kind: metrics.INFLIGHT.labels(kind.value) for kind in Kind}


def gate_of(conn: HTTPConnection) -> Admission:
    """The process's pool (built by the app's lifespan)."""
    return conn.app.state.admission  # type: ignore[no-any-return]


class Admitted:
    """A context manager holding an admitted request's ticket until the block ends, whatever way."""

    __slots__ = ("_gate", "_ticket")

    def __init__(self, gate: Admission, ticket: Ticket) -> None:
        self._gate = gate
        self._ticket = ticket

    def __enter__(self) -> Ticket:
        return self._ticket

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        ticket = self._ticket
        if ticket.held:
            self._gate.leave(ticket)
            _INFLIGHT[ticket.kind].dec(ticket.weight)


def admit(gate: Admission, kind: Kind, weight: int = 1) -> Admitted:
    """``with admit(gate_of(request), Kind.AWARD, n):`` around the work; raises ``Overloaded``
    (429 with Retry-After) when the process holds as much as ``kind`` may find in flight."""
    ticket = gate.try_enter(kind, weight)
    if ticket is None:
        _SHED[kind].inc()
        raise Overloaded(gate.retry_after_s())
    _INFLIGHT[kind].inc(ticket.weight)  # a heavy request counts as at most the whole limit
    return Admitted(gate, ticket)


def refuse_if_full(gate: Admission, kind: Kind) -> None:
    """Raise ``Overloaded`` if the pool is too full for any request of ``kind``: called by the
    events route after authentication and before its body is read and parsed, so that what a
    spike is made of is refused at the least cost (the admission proper, by weight, follows)."""
    if gate.refuses_any(kind):
        _SHED[kind].inc()
        raise Overloaded(gate.retry_after_s())

