"""``make bench`` runs end to end: every phase completes and the summary prints its figures.

Speed is the bench's own report, never asserted here: the figures only have to be numbers.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ROWS = [
    "HTTP 1 event/request, req/s, median of 2 pairs",
    "HTTP 1 event/request, req/s, best pair",
    "HTTP 1 event/request, p50 ms, median of 2",
    "HTTP 1 event/request, p99 ms, median of 2",
    "batch ingest, events/s vs pipelined member.lua",
    "HTTP spend, req/s (1 member script call)",
    "HTTP redeem, req/s (object, member, settle)",
    "Redis bytes per member (5 events)",
    "Redis bytes per member (100 events)",
    "Redis bytes per dedupe entry (MEMORY USAGE)",
    "Redis bytes per dedupe entry (used_memory)",
    "HTTP 1 event/request on a 3-primary cluster, req/s, median of 2",
    "Valkey CPU per award / floor script (purchase)",
    "Valkey CPU per award / floor script (programme at its limits)",
    "HTTP 1 event/request, scheduler with 20,000 due jobs / idle, req/s, median of 2 pairs",
    "Scheduler jobs run/s beside the award path (that pair's window)",
    "Lifecycle bytes per member (16 job sets, 4.0 jobs a member)",
]
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


def test_quick_bench_runs_and_prints_the_summary():
    """`python -m loadtest.bench --quick` exits 0 and prints every summary row with numeric figures."""
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out[-3000:]}\n{done.stderr[-3000:]}"
    assert "command: " in out and "--quick" in out
    assert "\nSUMMARY\n" in out
    for figure in ROWS:
        row = re.search(rf"^\| {re.escape(figure)} +\| +({NUMBER}) +\| +(\S+) +\| +(\S+) +\| .*\| +(MET|MISSED|report) \|$",
                        out, re.MULTILINE)
        assert row, f"no summary row for {figure!r} in:\n{out[-3000:]}"
        if row.group(4) != "report":  # a target row compares against a measured baseline
            assert re.fullmatch(NUMBER, row.group(2)) and re.fullmatch(rf"{NUMBER}x", row.group(3)), row.group(0)
    # Spends and redemptions ran and were applied, not refused (the summary's error row is 0).
    assert re.search(r"^\| HTTP errors \(non-2xx\) and events not applied +\| +0 +\|", out, re.MULTILINE), out[-3000:]
    assert re.search(rf"single-event ratio per pair \(service/baseline\): {NUMBER}x, {NUMBER}x", out)
