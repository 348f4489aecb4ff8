"""The rehearsal kit's pure parts: shapes, settings, Locust's CSV and the thresholds' verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.locust.kit import DEFAULT_CONFIG, EndpointStats, Thresholds, load, member_day, read_stats, steady, verdict


def test_member_day_is_quiet_then_steps_to_the_spike_then_tails_off() -> None:
    shape = member_day(20, 100, spike=3.0, opens_at=0.3, spike_for=0.2)
    assert shape.at(0) == (10, 2.0)  # the quiet morning: half the base crowd
    assert shape.at(29.9)[0] == 10
    assert shape.at(30) == (60, 60.0)  # the sale opens: a step, spawned at once
    assert shape.at(49.9)[0] == 60
    tail = [shape.at(t)[0] for t in (55, 70, 80, 99)]
    assert tail == sorted(tail, reverse=True) and tail[-1] == 20
    assert shape.at(100) is None and shape.duration_s == 100


def test_steady_holds_one_crowd() -> None:
    shape = steady(8, 30)
    assert shape.at(0)[0] == shape.at(29)[0] == 8 and shape.at(30) is None


def test_the_example_kit_loads_and_flags_override_it() -> None:
    kit = load(DEFAULT_CONFIG)
    assert kit.shape.name == "member_day" and kit.thresholds.error_rate == 0.01
    assert "POST /v1/events purchase" in kit.thresholds.p99_ms
    small = load(DEFAULT_CONFIG, "steady", {"users": 3, "duration_s": 12, "spike": None})
    assert small.shape.stages[0].users == 3 and small.shape.duration_s == 12
    with pytest.raises(ValueError, match="unknown shape"):
        load(DEFAULT_CONFIG, "flat")


def stats(**by_name: tuple[int, int, float]) -> list[EndpointStats]:
    return [EndpointStats(n, r, f, 1.0, p99, 1.0) for n, (r, f, p99) in by_name.items()]


def test_the_verdict_names_each_broken_threshold() -> None:
    limits = Thresholds(0.01, {"POST /v1/events purchase": 100})
    assert verdict(stats(Aggregated=(1000, 5, 50), **{"POST /v1/events purchase": (900, 5, 90)}), limits) == []
    problems = verdict(stats(Aggregated=(1000, 20, 50), **{"POST /v1/events purchase": (900, 20, 150)}), limits)
    assert problems == ["error rate 2.00% over 1.00%", "POST /v1/events purchase: p99 150 ms over 100 ms"]
    assert verdict(stats(Aggregated=(0, 0, 0)), limits) == ["no request was made"]
    assert verdict(stats(Aggregated=(10, 0, 1)), limits) == ["POST /v1/events purchase: no requests (threshold p99 100 ms)"]


def test_locust_csv_rows_are_named_by_method_and_name(tmp_path: Path) -> None:
    header = ('"Type","Name","Request Count","Failure Count","Median Response Time","Average Response Time",'
              '"Min Response Time","Max Response Time","Average Content Size","Requests/s","Failures/s","50%","66%",'
              '"75%","80%","90%","95%","98%","99%","99.9%","99.99%","100%"')
    rows = ['"POST","/v1/events purchase",10,1,2,2,1,9,100,5.0,0.5,2,2,2,3,4,5,6,7,8,9,9',
            '"","Aggregated",10,1,2,2,1,9,100,5.0,0.5,2,2,2,3,4,5,6,7,8,9,9']
    (tmp_path / "s.csv").write_text("\n".join([header, *rows]) + "\n")
    [purchase, total] = read_stats(tmp_path / "s.csv")
    assert (purchase.name, purchase.requests, purchase.failures, purchase.p99_ms) == ("POST /v1/events purchase", 10, 1, 7.0)
    assert total.name == "Aggregated"
