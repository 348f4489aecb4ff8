"""The rehearsal kit's settings and its load shapes, as plain data and pure functions.

Ops describe a rehearsal in a small TOML file (``loadtest/memberday.toml``): how many users of
each kind, the shape of the day compressed into minutes, what the crowd does, and the pass/fail
thresholds. Everything here is pure (no Locust, no network), so the shapes and the verdict are
tested like any rule.
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "memberday.toml"


@dataclass(frozen=True)
class Stage:
    """Until ``until_s`` (seconds from the start) hold ``users`` users, spawned at ``rate`` a second."""

    until_s: float
    users: int
    rate: float


@dataclass(frozen=True)
class Shape:
    name: str
    stages: tuple[Stage, ...]

    @property
    def duration_s(self) -> float:
        return self.stages[-1].until_s

    def at(self, elapsed_s: float) -> tuple[int, float] | None:
        """(users, spawn rate) at ``elapsed_s``; None once the run is over."""
        for stage in self.stages:
            if elapsed_s < stage.until_s:
                return stage.users, stage.rate
        return None


def steady(users: int, duration_s: float) -> Shape:
    """An ordinary day: the same crowd throughout."""
    return Shape("steady", (Stage(duration_s, users, max(1.0, users / 5)),))


def member_day(users: int, duration_s: float, spike: float, opens_at: float, spike_for: float, tail_steps: int = 4) -> Shape:
    """Member day compressed: a quiet morning at half the base crowd, a step to ``spike`` times
    the base the moment the flash sale opens (``opens_at``, a fraction of the run), held for
    ``spike_for`` (a fraction), then a long tail stepping back down to the base."""
    quiet = max(1, users // 2)
    peak = max(users, round(users * spike))
    opens_s, peak_s = duration_s * opens_at, duration_s * (opens_at + spike_for)
    stages = [Stage(opens_s, quiet, max(1.0, quiet / 5)), Stage(peak_s, peak, float(peak))]  # the step is a step
    tail_s = (duration_s - peak_s) / tail_steps
    for i in range(1, tail_steps + 1):
        crowd = round(peak - (peak - users) * i / tail_steps)
        stages.append(Stage(peak_s + tail_s * i, crowd, float(max(1, peak))))
    return Shape("member_day", tuple(stages))


@dataclass(frozen=True)
class Mix:
    """What the shop backend posts, by weight, and how often it deliberately resends an old event."""

    purchase: int = 60
    checkin: int = 20
    share: int = 12
    refund: int = 3
    spend: int = 5
    retry_share: float = 0.05  # of requests: an earlier event sent again as is (must be a duplicate)


@dataclass(frozen=True)
class Kit:
    shape: Shape
    shop_users: int  # weight of the shop-backend user class
    app_users: int  # weight of the member-app user class (live feed held open)
    members: int  # distinct members the shop posts for
    wait_s: tuple[float, float]  # think time between a user's requests
    app_wait_s: tuple[float, float]
    mix: Mix
    thresholds: "Thresholds"


@dataclass(frozen=True)
class Thresholds:
    error_rate: float = 0.01  # failures / requests, over every endpoint
    p99_ms: dict[str, float] = field(default_factory=dict)  # by Locust request name


def load(path: Path = DEFAULT_CONFIG, shape: str | None = None, overrides: dict[str, Any] | None = None) -> Kit:
    """The kit from its TOML, with command-line ``overrides`` (users, duration_s, spike)."""
    raw = tomllib.loads(path.read_text())
    run = {**raw.get("run", {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    name = shape or run.get("shape", "member_day")
    users, duration = int(run.get("users", 20)), float(run.get("duration_s", 60))
    if name == "steady":
        chosen = steady(users, duration)
    elif name == "member_day":
        day = raw.get("member_day", {})
        chosen = member_day(
            users,
            duration,
            spike=float(run.get("spike", day.get("spike", 3.0))),
            opens_at=float(day.get("opens_at", 0.3)),
            spike_for=float(day.get("spike_for", 0.2)),
        )
    else:
        raise ValueError(f"unknown shape {name!r}: steady or member_day")
    crowd = raw.get("crowd", {})
    limits = raw.get("thresholds", {})
    return Kit(
        shape=chosen,
        shop_users=int(crowd.get("shop_weight", 3)),
        app_users=int(crowd.get("app_weight", 1)),
        members=int(run.get("members", crowd.get("members", 2000))),
        wait_s=tuple(crowd.get("wait_s", (0.05, 0.2))),  # type: ignore[arg-type]
        app_wait_s=tuple(crowd.get("app_wait_s", (1.0, 3.0))),  # type: ignore[arg-type]
        mix=Mix(**raw.get("mix", {})),
        thresholds=Thresholds(float(limits.get("error_rate", 0.01)), dict(limits.get("p99_ms", {}))),
    )


@dataclass(frozen=True)
class EndpointStats:
    name: str
    requests: int
    failures: int
    p50_ms: float
    p99_ms: float
    rps: float


def read_stats(csv_path: Path) -> list[EndpointStats]:
    """Locust's ``<prefix>_stats.csv``: one row per request name, and the "Aggregated" row."""
    out = []
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            name = row["Name"] if row["Type"] in ("", "None") else f'{row["Type"]} {row["Name"]}'
            out.append(
                EndpointStats(
                    name=name.strip(),
                    requests=int(row["Request Count"]),
                    failures=int(row["Failure Count"]),
                    p50_ms=float(row["50%"] or 0),
                    p99_ms=float(row["99%"] or 0),
                    rps=float(row["Requests/s"] or 0),
                )
            )
    return out


def verdict(stats: list[EndpointStats], limits: Thresholds) -> list[str]:
    """What breaks the thresholds (empty: the run passes)."""
    problems = []
    total = next((s for s in stats if s.name == "Aggregated"), None)
    if total is None or total.requests == 0:
        return ["no request was made"]
    rate = total.failures / total.requests
    if rate > limits.error_rate:
        problems.append(f"error rate {rate:.2%} over {limits.error_rate:.2%}")
    by_name = {s.name: s for s in stats}
    for name, limit in limits.p99_ms.items():
        s = by_name.get(name)
        if s is None or s.requests == 0:
            problems.append(f"{name}: no requests (threshold p99 {limit:g} ms)")
        elif s.p99_ms > limit:
            problems.append(f"{name}: p99 {s.p99_ms:g} ms over {limit:g} ms")
    return problems
