"""``python -m loadtest.cluster_clients`` runs end to end and prints its summary (ours at least)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_client_comparison_runs_and_prints_its_summary() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.cluster_clients", "--rounds", "1", "--warmup", "0.2", "--duration", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"^\|  ours \| +[0-9,]+ calls/s \| 1\.00x of ours \| client CPU +[0-9.]+ us/call \|$", done.stdout, re.MULTILINE), done.stdout
