"""``make bench-overload`` runs end to end (tiny and short): every run reports, the summary prints.

Its figures are its report, never asserted here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_overload_bench_runs_and_prints_its_summary() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.overload", "--duration", "1", "--crowd", "64", "--limits", "0,8"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for label in ("off", "8"):
        assert re.search(rf"^\| limit +{label} \| unloaded p99 +[0-9.]+ ms \| crowd: .* shed [0-9,]+ \|$", done.stdout, re.M), done.stdout


def test_the_open_loop_overload_arrives_at_a_multiple_of_the_sustained_rate() -> None:
    """``--rate-x 3``: the sustained rate is measured first, and the crowd arrives at 3x it."""
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.overload", "--duration", "1", "--crowd", "64", "--limits", "8", "--rate-x", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = re.search(r"sustained ([0-9,]+) req/s .* arrives at 3x that: ([0-9,]+) req/s, open loop", done.stdout)
    assert found, done.stdout
    sustained, rate = (int(x.replace(",", "")) for x in found.groups())
    assert sustained > 0 and abs(rate - 3 * sustained) <= 3, found.group(0)
    assert re.search(r"^\| limit +8 \| unloaded p99 +[0-9.]+ ms \| crowd: .* shed [0-9,]+ \|$", done.stdout, re.M), done.stdout
