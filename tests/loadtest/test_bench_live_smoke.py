"""``make bench-live`` runs end to end: a quick run prints its figures and loses no frame.

No timing is asserted (the machine is shared); that every frame sent was delivered, once, to
the member it was for, is a correctness check and holds at any speed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


@pytest.mark.timeout(120)
def test_quick_run_prints_figures_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bench_live.json"
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_live", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    text = run.stdout
    assert "command: " in text and "--quick" in text

    for line in ("machine: ", "run: 200 subscribers", "topology: ", "baseline: loadtest/live_baseline.py",
                 "[1/2] service: 200 sockets", "[2/2] baseline: 200 sockets"):
        assert re.search(rf"^{re.escape(line)}", text, re.M), f"no line starting {line!r}:\n{text}"
    assert re.search(r"^\s+service\s+baseline\s+service/baseline$", text, re.M), text
    for label in (
        "connections",
        "pushes/s sent",
        "delivered/s",
        r"latency p50 \(ms\)",
        r"latency p90 \(ms\)",
        r"latency p99 \(ms\)",
        r"latency p99\.9 \(ms\)",
        r"latency max \(ms\)",
        r"sent \(measured window\)",
        r"lost \(sent - delivered\)",
        "duplicates",
        "misrouted",
        r"memory per idle connection \(KiB\)",
        r"connect time \(s\)",
    ):
        # one figure for the service and one for the baseline on each line
        assert re.search(rf"^{label}\s+{NUMBER}\s+{NUMBER}", text, re.M), f"no figures for {label!r}:\n{text}"
    for label in (r"RSS idle / after run \(MiB\)", r"sender lag p99/max \(ms\)"):
        # "idle / after" and "p99 / max" for each side
        pair = rf"{NUMBER} / {NUMBER}"
        assert re.search(rf"^{label}\s+{pair}\s+{pair}$", text, re.M), f"no figures for {label!r}:\n{text}"
    assert re.search(r"^CPU during the service window \(100% = one core of \d+\): service \d+%, valkey \d+%, "
                     r"poster \d+%, subscriber \d+%$", text, re.M), text
    assert re.search(r"^CPU during the baseline window \(100% = one core of \d+\): baseline server \d+%, "
                     r"subscriber \d+%$", text, re.M), text
    assert re.search(r"^target \(10,000 subscribers.*\): (MET|MISSED|NOT ASSESSED)", text, re.M), text
    assert re.search(rf"rekindle_live_frames_sent_total={NUMBER}", text), text
    assert re.search(rf"rekindle_live_slow_consumer_disconnects_total={NUMBER}", text), text

    figures = orjson.loads(out.read_bytes())
    service, baseline = figures["service"], figures["baseline"]
    assert service["connections"] == 200 and baseline["connections"] == 200
    assert service["errors"] == 0
    assert service["sent"] > 0 and baseline["sent"] > 0
    assert service["lost"] == 0, "the service lost frames"
    assert service["delivered"] == service["sent"]
    assert service["duplicates"] == 0 and service["misrouted"] == 0
    assert not service["closed_by_server"]
    assert service["metrics"]["rekindle_live_slow_consumer_disconnects_total"] == 0
    assert service["metrics"]["rekindle_live_frames_sent_total"] >= service["sent"]
