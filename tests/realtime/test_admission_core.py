"""Admission control's core and settings, without a server: thresholds, weights, counters, jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from realtime.admission import Admission, Kind, Limits, Ticket, admit, events_weight
from realtime.errors import Overloaded, status_of
from realtime.settings import Settings


def enter(gate: Admission, kind: Kind, weight: int = 1) -> Ticket:
    ticket = gate.try_enter(kind, weight)
    assert ticket is not None, (kind, weight, gate.inflight)
    return ticket


def test_awards_are_admitted_up_to_the_limit_then_refused() -> None:
    """Awards enter while the weight in flight stays within the limit; the next one is refused and counted."""
    gate = Admission(Limits(3, 1))
    tickets = [enter(gate, Kind.AWARD) for _ in range(3)]
    assert gate.try_enter(Kind.AWARD) is None
    assert (gate.inflight, gate.admitted[Kind.AWARD], gate.shed[Kind.AWARD]) == (3, 3, 1)
    gate.leave(tickets[0])
    assert gate.try_enter(Kind.AWARD) is not None
    assert gate.inflight == 3


def test_leaving_twice_gives_back_once() -> None:
    """A ticket's weight comes back once, however many times it is given back."""
    gate = Admission(Limits(4, 2))
    ticket = enter(gate, Kind.AWARD, 3)
    gate.leave(ticket)
    gate.leave(ticket)
    assert (gate.inflight, gate.inflight_by[Kind.AWARD]) == (0, 0)


def test_reads_and_replays_are_refused_before_awards() -> None:
    """Past the lower threshold, reads and replays are refused while awards are still admitted."""
    gate = Admission(Limits(4, 2))
    enter(gate, Kind.READ)
    enter(gate, Kind.AWARD)
    assert gate.try_enter(Kind.READ) is None
    assert gate.try_enter(Kind.REPLAY) is None
    enter(gate, Kind.AWARD)
    enter(gate, Kind.AWARD)
    assert gate.try_enter(Kind.AWARD) is None
    assert gate.inflight_by == {Kind.AWARD: 3, Kind.READ: 1, Kind.REPLAY: 0}
    assert gate.shed == {Kind.AWARD: 1, Kind.READ: 1, Kind.REPLAY: 1}
    assert gate.admitted == {Kind.AWARD: 3, Kind.READ: 1, Kind.REPLAY: 0}


def test_a_batch_weighs_its_events() -> None:
    """A batch takes as much of the pool as it has events: one that does not fit is refused while a smaller one fits."""
    gate = Admission(Limits(10, 5))
    enter(gate, Kind.AWARD, 8)
    assert gate.try_enter(Kind.AWARD, 3) is None
    enter(gate, Kind.AWARD, 2)
    assert gate.inflight == 10


def test_a_heavy_request_is_admitted_at_half_load_and_then_holds_the_pool() -> None:
    """A batch heavier than half the limit is taken while the pool is at most half full, counted as
    at most the whole limit (so it then holds the pool), and refused past half: never starved by a
    stream of single events, which keep the pool from ever being empty."""
    gate = Admission(Limits(8, 4))
    big = enter(gate, Kind.AWARD, 1000)
    assert gate.inflight == 8
    assert gate.try_enter(Kind.AWARD) is None
    gate.leave(big)
    singles = [enter(gate, Kind.AWARD) for _ in range(4)]
    assert gate.try_enter(Kind.AWARD, 1000) is not None  # at half load: admitted
    assert gate.inflight == 12
    gate.leave(singles[0])
    assert gate.try_enter(Kind.AWARD, 5) is None  # 11 in flight: over half, refused
    assert gate.try_enter(Kind.AWARD, 4) is None  # light, but does not fit


def test_a_gate_with_no_limit_admits_everything() -> None:
    """REKINDLE_MAX_INFLIGHT=0: every kind is admitted at any weight, and still counted."""
    gate = Admission(Limits(0, 0))
    for kind in Kind:
        for _ in range(100):
            enter(gate, kind, 50)
    assert gate.inflight == 3 * 100 * 50
    assert gate.shed == dict.fromkeys(Kind, 0)


@pytest.mark.parametrize(("awards", "reads"), [(-1, 0), (4, 0), (4, 5)])
def test_limits_that_cannot_work_are_refused(awards: int, reads: int) -> None:
    """A negative limit, or a read limit outside 1..the award limit, is a ValueError."""
    with pytest.raises(ValueError):
        Limits(awards, reads)


def test_a_weight_below_one_is_a_defect() -> None:
    """Every request weighs at least 1: a weight of 0 is a caller's bug, not a free pass."""
    with pytest.raises(ValueError):
        Admission(Limits(4, 2)).try_enter(Kind.AWARD, 0)


def test_retry_after_is_one_or_two_seconds_at_random() -> None:
    """Refused clients are told 1 or 2 seconds, both seen, so a refused crowd does not come back at once."""
    gate = Admission(Limits(1, 1), rng=random.Random(7))
    seen = {gate.retry_after_s() for _ in range(200)}
    assert seen == {1, 2}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def second_of(gate: Admission, clock: Clock, admitted: int, shed: int) -> None:
    """One second in which the pool (limit 1) admits ``admitted`` requests and refuses ``shed``."""
    for _ in range(admitted):
        ticket = enter(gate, Kind.AWARD)
        for _ in range(shed // admitted if admitted else 0):
            assert gate.try_enter(Kind.AWARD) is None
        gate.leave(ticket)
    if not admitted:
        held = enter(gate, Kind.AWARD)
        for _ in range(shed):
            assert gate.try_enter(Kind.AWARD) is None
        gate.leave(held)
    clock.t += 1.0


def test_retry_after_grows_with_a_sustained_overload_and_falls_back_after_it() -> None:
    """Told the seconds needed to take back what the last second refused, at the rate it admitted (jittered x1-x2):
    a crowd refused 6 to 1 hears 6-12 s, one refused 1,000 to 1 at most 60, and 1-2 s again once refusals stop."""
    clock = Clock()
    gate = Admission(Limits(1, 1), rng=random.Random(3), now=clock)
    second_of(gate, clock, admitted=100, shed=600)
    assert {gate.retry_after_s() for _ in range(300)} == set(range(6, 13))
    second_of(gate, clock, admitted=1, shed=1000)
    assert {gate.retry_after_s() for _ in range(300)} == set(range(30, 61))
    second_of(gate, clock, admitted=50, shed=0)  # a second with no refusals
    assert {gate.retry_after_s() for _ in range(100)} == {1, 2}
    second_of(gate, clock, admitted=100, shed=300)
    clock.t += 5  # then nothing for five seconds: an old overload says nothing about now
    assert {gate.retry_after_s() for _ in range(100)} == {1, 2}


def test_a_full_pool_refuses_before_the_body_is_read() -> None:
    """``refuses_any`` is true (and counted as shed) only when not even a request of weight 1 would be admitted."""
    gate = Admission(Limits(2, 1))
    assert not gate.refuses_any(Kind.AWARD)
    enter(gate, Kind.AWARD)
    assert not gate.refuses_any(Kind.AWARD)
    assert gate.refuses_any(Kind.READ)  # reads stop at the lower threshold
    enter(gate, Kind.AWARD)
    assert gate.refuses_any(Kind.AWARD)
    assert gate.shed == {Kind.AWARD: 1, Kind.READ: 1, Kind.REPLAY: 0}
    assert not Admission(Limits(0, 0)).refuses_any(Kind.AWARD)  # the gate off refuses nothing


@pytest.mark.parametrize(
    ("body", "weight"),
    [
        ({"id": "e1", "member": "m"}, 1),
        ({"events": [{}, {}, {}]}, 3),
        ({"events": []}, 1),
        ({"events": "nope"}, 1),
        ([1, 2, 3], 1),
        (None, 1),
    ],
)
def test_events_weight(body: object, weight: int) -> None:
    """A batch weighs its events; a single event, a malformed body or an empty batch weighs 1."""
    assert events_weight(body) == weight


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("enter"), st.sampled_from(list(Kind)), st.integers(1, 12)),
        st.tuples(st.just("leave"), st.integers(0, 1000), st.just(0)),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None, database=None)
@given(awards=st.integers(1, 20), reads_share=st.floats(0, 1), ops=OPS)
def test_the_pool_holds_its_invariants(awards: int, reads_share: float, ops: list[tuple[str, object, int]]) -> None:
    """Any sequence of entries and leaves: in flight is the sum of held tickets, per kind too; a light
    entry is refused only when something is in flight and it would pass its threshold, and admitted
    ones stay within it unless they came alone; a heavy one (over half its threshold) is refused only
    past half load, and counts at most the threshold; every attempt is admitted or shed."""
    limits = Limits(awards, max(1, round(awards * reads_share)))
    gate = Admission(limits)
    held: list[Ticket] = []
    attempts = dict.fromkeys(Kind, 0)
    for op, arg, weight in ops:
        if op == "leave":
            if held:
                gate.leave(held.pop(int(arg) % len(held)))  # type: ignore[call-overload]
            continue
        kind = arg
        assert isinstance(kind, Kind)
        attempts[kind] += 1
        before = gate.inflight
        ticket = gate.try_enter(kind, weight)
        limit = limits.of_kind(kind)
        half = max(1, limit // 2)
        if weight > half:
            assert (ticket is None) == (before > half)
            if ticket is not None:
                held.append(ticket)
                assert ticket.weight == min(weight, limit)
        elif ticket is None:
            assert before > 0 and before + weight > limit
        else:
            held.append(ticket)
            assert before == 0 or gate.inflight <= limit
        assert gate.inflight == sum(t.weight for t in held)
        for k in Kind:
            assert gate.inflight_by[k] == sum(t.weight for t in held if t.kind is k)
    assert {k: gate.admitted[k] + gate.shed[k] for k in Kind} == attempts


def _sample(name: str, kind: Kind) -> float:
    return REGISTRY.get_sample_value(name, {"kind": kind.value}) or 0.0


def test_admit_raises_overloaded_and_counts_it() -> None:
    """The shell: a refusal is ``Overloaded`` (429) with Retry-After seconds and one more
    rekindle_shed_total; an admitted block holds its weight in rekindle_inflight until it ends,
    also when it raises."""
    gate = Admission(Limits(2, 1))
    shed_before = _sample("rekindle_shed_total", Kind.READ)
    inflight_before = _sample("rekindle_inflight", Kind.AWARD)
    with pytest.raises(RuntimeError):
        with admit(gate, Kind.AWARD, 2):
            assert _sample("rekindle_inflight", Kind.AWARD) == inflight_before + 2
            with pytest.raises(Overloaded) as refused:
                admit(gate, Kind.READ)
            raise RuntimeError("the handler failed")
    assert status_of(refused.value) == 429
    assert refused.value.retry_after_s in (1, 2)
    assert refused.value.as_dict()["code"] == "overloaded"
    assert _sample("rekindle_shed_total", Kind.READ) == shed_before + 1
    assert _sample("rekindle_inflight", Kind.AWARD) == inflight_before
    assert gate.inflight == 0


# --- settings ----------------------------------------------------------------------------------------


def test_settings_default_to_64_and_half_for_reads() -> None:
    """With nothing set, awards are limited at 64 in flight and reads and replays at 32."""
    s = Settings.from_env({})
    assert (s.max_inflight, s.max_inflight_reads) == (64, 32)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"REKINDLE_MAX_INFLIGHT": "2"}, (2, 1)),
        ({"REKINDLE_MAX_INFLIGHT": "1"}, (1, 1)),
        ({"REKINDLE_MAX_INFLIGHT": "0"}, (0, 0)),
        ({"REKINDLE_MAX_INFLIGHT": "100", "REKINDLE_MAX_INFLIGHT_READS": "90"}, (100, 90)),
        ({"REKINDLE_MAX_INFLIGHT": "0", "REKINDLE_MAX_INFLIGHT_READS": "90"}, (0, 0)),
    ],
)
def test_settings_read_the_limits(env: dict[str, str], expected: tuple[int, int]) -> None:
    """The read limit defaults to half the award limit (at least 1); 0 turns the gate off, reads included."""
    s = Settings.from_env(env)
    assert (s.max_inflight, s.max_inflight_reads) == expected
    Limits(s.max_inflight, s.max_inflight_reads)  # what the app builds from them is valid
    assert Settings.from_env(s.worker_env()).max_inflight_reads == expected[1]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REKINDLE_MAX_INFLIGHT": "-1"}, "REKINDLE_MAX_INFLIGHT"),
        ({"REKINDLE_MAX_INFLIGHT": "lots"}, "REKINDLE_MAX_INFLIGHT"),
        ({"REKINDLE_MAX_INFLIGHT": "10", "REKINDLE_MAX_INFLIGHT_READS": "11"}, "REKINDLE_MAX_INFLIGHT_READS"),
        ({"REKINDLE_MAX_INFLIGHT": "10", "REKINDLE_MAX_INFLIGHT_READS": "0"}, "REKINDLE_MAX_INFLIGHT_READS"),
        ({"REKINDLE_MAX_INFLIGHT_READS": "half"}, "REKINDLE_MAX_INFLIGHT_READS"),
    ],
)
def test_settings_that_cannot_work_name_the_variable(env: dict[str, str], named: str) -> None:
    """A limit that is not a whole number, or a read limit outside 1..the award limit, names its variable."""
    with pytest.raises(ValueError, match=named):
        Settings.from_env(env)


def test_the_gauge_counts_what_the_pool_counts_for_a_heavy_request() -> None:
    """A heavy request is counted as at most the whole limit: the in-flight gauge goes up and back
    down by that same weight, never by the events it carried."""
    gate = Admission(Limits(4, 2))
    before = _sample("rekindle_inflight", Kind.AWARD)
    with admit(gate, Kind.AWARD, 1000) as ticket:
        assert ticket.weight == 4
        assert _sample("rekindle_inflight", Kind.AWARD) == before + 4
    assert _sample("rekindle_inflight", Kind.AWARD) == before
