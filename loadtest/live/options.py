"""What ``make bench-live`` aims at, and the command line that sizes a run."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

#: The programme the service and the poster run: one event type, one rule granting 1 XP, no cap,
#: one tier, so that one award is exactly one frame.
CONFIG = Path(__file__).resolve().parent.parent / "bench_live.toml"

TARGET_SUBSCRIBERS = 10_000
TARGET_RATE = 5_000
TARGET_P99_MS = 50.0


@dataclass(frozen=True)
class Options:
    subscribers: int
    rate: float
    duration: float
    warmup: float
    tick_ms: float
    concurrency: int
    deflate: bool
    skip_baseline: bool
    py_spy: Path | None
    quick: bool
    json_path: Path | None


def parse_args(argv: list[str] | None, description: str) -> Options:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_live", description=description)
    parser.add_argument("--subscribers", type=int, default=None, help=f"sockets (default {TARGET_SUBSCRIBERS:,})")
    parser.add_argument("--rate", type=float, default=None, help=f"pushes per second (default {TARGET_RATE:,})")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring (default 2)")
    parser.add_argument("--tick-ms", type=float, default=10.0, help="pushes go out in a burst every tick (default 10)")
    parser.add_argument("--concurrency", type=int, default=200, help="connection attempts in flight (default 200)")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate, as browsers do")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--py-spy", type=Path, metavar="BIN", help="profile the service over the measured window with this py-spy")
    parser.add_argument("--quick", action="store_true", help="200 subscribers, 500/s, 2 s (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    a = parser.parse_args(argv)
    quick = {"subscribers": 200, "rate": 500.0, "duration": 2.0, "warmup": 1.0}
    full = {"subscribers": TARGET_SUBSCRIBERS, "rate": float(TARGET_RATE), "duration": 10.0, "warmup": 2.0}
    d = quick if a.quick else full
    opts = Options(
        subscribers=a.subscribers if a.subscribers is not None else int(d["subscribers"]),
        rate=a.rate if a.rate is not None else d["rate"],
        duration=a.duration if a.duration is not None else d["duration"],
        warmup=a.warmup if a.warmup is not None else d["warmup"],
        tick_ms=a.tick_ms,
        concurrency=a.concurrency,
        deflate=a.deflate,
        skip_baseline=a.skip_baseline,
        py_spy=a.py_spy,
        quick=a.quick,
        json_path=a.json,
    )
    if opts.subscribers < 1 or opts.rate <= 0 or opts.duration <= 0 or opts.warmup < 0 or opts.tick_ms <= 0:
        parser.error("--subscribers, --rate, --duration and --tick-ms must be positive, --warmup not negative")
    return opts
