"""``make loadtest`` runs end to end: a short member-day rehearsal on Locust, then the verifier.

About 20 s of a small crowd, so the kit cannot rot: every user class makes its requests, the
live feed delivers awards to app members, the members play the example's games (check-in, the
wheel, the flash sale), deliberate resends answer `duplicate`, the reports
are written and the verifier passes. Speed is not asserted: figures come from full runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loadtest.locust.kit import read_stats

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_rehearsal_passes_and_verifies(tmp_path: Path) -> None:
    # The example kit, with app members busier, so each of their requests happens in 20 s.
    kit = (ROOT / "loadtest" / "memberday.toml").read_text()
    kit = kit.replace("app_weight = 1 ", "app_weight = 2 ").replace("app_wait_s = [1.0, 3.0]", "app_wait_s = [0.1, 0.3]")
    assert "app_wait_s = [0.1, 0.3]" in kit and "app_weight = 2 " in kit
    (tmp_path / "kit.toml").write_text(kit)
    out = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.locust.rehearse", "--kit", str(tmp_path / "kit.toml"), "--duration", "20",
         "--users", "4", "--processes", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert "PASSED" in done.stdout
    assert "| points: balance = lots = ledger" in done.stdout and "\nok: " in done.stdout
    assert "| games' conservation across members" in done.stdout  # cards: issued == held + in transfer + consumed
    assert (out / "report.html").stat().st_size > 0
    stats = {s.name: s for s in read_stats(out / "locust_stats.csv")}
    # (A help, and a card's gift, need another app member: with this small a crowd there may be
    # only one app member, so they are not required here; the full rehearsal has dozens.)
    games = ("POST /v1/me/checkin", "POST /v1/games/lottery/{wheel}/spin", "POST /v1/games/flash/{sale}/claim",
             "POST /v1/games/bargain", "POST /v1/games/cards/{campaign}/draw")
    for name in ("POST /v1/events purchase", "POST /v1/events retry", "WS connect", "WS live delivery", "POST /v1/me/redeem",
                 *games):
        assert name in stats and stats[name].requests > 0, (name, sorted(stats))
    assert stats["Aggregated"].failures == 0
