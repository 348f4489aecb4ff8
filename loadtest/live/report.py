"""The live bench's table (service beside baseline, with ratios), its notes and the verdict."""

from __future__ import annotations

import math
import os

from loadtest.live.options import TARGET_P99_MS, TARGET_RATE, TARGET_SUBSCRIBERS, Options
from loadtest.live.orchestrate import SideResult


def _fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _ratio(a: float, b: float) -> str:
    if not b or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.2f}x"


def verdict(opts: Options, svc: SideResult) -> tuple[str, str]:
    """MET, MISSED or NOT ASSESSED (a run smaller than the target), and why."""
    if opts.subscribers < TARGET_SUBSCRIBERS or opts.rate < TARGET_RATE:
        return "NOT ASSESSED", f"this run is smaller than the target ({opts.subscribers:,} subscribers at {opts.rate:,.0f}/s)"
    reasons = []
    if svc.connections < TARGET_SUBSCRIBERS:
        reasons.append(f"only {svc.connections:,} subscribers connected")
    if svc.pushes_per_s < 0.98 * TARGET_RATE:
        reasons.append(f"pushes held at {svc.pushes_per_s:,.0f}/s only")
    if not svc.p99_ms < TARGET_P99_MS:
        reasons.append(f"p99 {_fmt(svc.p99_ms)} ms")
    if svc.lost:
        reasons.append(f"{svc.lost:,} frames lost")
    if reasons:
        return "MISSED", "; ".join(reasons)
    return "MET", f"p99 {_fmt(svc.p99_ms)} ms with {svc.connections:,} subscribers at {svc.pushes_per_s:,.0f} pushes/s"


#: (label, SideResult attribute, digits, with a service/baseline ratio)
ROWS: list[tuple[str, str, int, bool]] = [
    ("connections", "connections", 0, False),
    ("pushes/s sent", "pushes_per_s", 0, True),
    ("delivered/s", "delivered_per_s", 0, True),
    ("latency p50 (ms)", "p50_ms", 2, True),
    ("latency p90 (ms)", "p90_ms", 2, True),
    ("latency p99 (ms)", "p99_ms", 2, True),
    ("latency p99.9 (ms)", "p999_ms", 2, True),
    ("latency max (ms)", "max_ms", 2, True),
    ("sent (measured window)", "sent", 0, False),
    ("lost (sent - delivered)", "lost", 0, False),
    ("duplicates", "duplicates", 0, False),
    ("misrouted", "misrouted", 0, False),
    ("memory per idle connection (KiB)", "kib_per_idle_conn", 1, True),
    ("RSS idle / after run (MiB)", "", 0, False),
    ("connect time (s)", "connect_s", 1, False),
    ("sender lag p99/max (ms)", "", 0, False),
]


def print_report(opts: Options, svc: SideResult, base: SideResult | None) -> None:
    sides = [svc] + ([base] if base else [])
    header = f"{'':34}{'service':>14}" + (f"{'baseline':>14}{'service/baseline':>18}" if base else "")
    print()
    print(header)
    for label, attr, digits, ratio in ROWS:
        if label.startswith("RSS"):
            cells = [f"{s.rss_idle_kib / 1024:.0f} / {s.rss_after_kib / 1024:.0f}" for s in sides]
        elif label.startswith("sender lag"):
            cells = [f"{_fmt(s.send_lag_p99_ms, 2)} / {_fmt(s.send_lag_max_ms, 2)}" for s in sides]
        else:
            cells = [_fmt(float(getattr(s, attr)), digits) for s in sides]
        line = f"{label:34}" + "".join(f"{c:>14}" for c in cells)
        if base and ratio:
            line += f"{_ratio(float(getattr(svc, attr)), float(getattr(base, attr))):>18}"
        print(line)
    print()
    for s in sides:
        cpu = ", ".join(f"{k} {v:.0f}%" for k, v in s.cpu_pct.items())
        print(f"CPU during the {s.name} window (100% = one core of {os.cpu_count()}): {cpu}")
    for s in sides:
        if s.closed_by_server:
            print(f"{s.name}: sockets closed by the server, by code: {s.closed_by_server}")
        if s.other_frames:
            print(f"{s.name}: frames without a bench id, by type: {s.other_frames}")
        for note in s.notes:
            print(f"{s.name}: NOTE: {note}")
    if svc.gc_collections:
        print(
            "service cyclic-GC collections during warm-up + window: "
            + ", ".join(f"gen{gen} {n:,}" for gen, n in sorted(svc.gc_collections.items()))
            + " (the service freezes long-lived objects, so gen2 here scans only recent ones;"
            " its full collection runs on a schedule, hourly by default: realtime/gcpacer.py)"
        )
    print(
        "service /metrics: "
        + ", ".join(f"{k}={v:,.0f}" for k, v in svc.metrics.items())
        + " (whole run, warm-up included)"
    )
    status, why = verdict(opts, svc)
    print(
        f"target ({TARGET_SUBSCRIBERS:,} subscribers, p99 < {TARGET_P99_MS:.0f} ms at {TARGET_RATE:,} pushes/s): "
        f"{status} ({why})"
    )
