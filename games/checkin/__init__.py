"""Daily check-in with streaks (签到): ``POST /v1/me/checkin``, make-up cards, streak rewards.

No object is shared between members here, so no step crosses slots: a check-in is one member
operation (``plans.py``), its streak decided by the member script against the stored state.
"""

from __future__ import annotations

from engine.plugins import Game
from games.checkin.config import Checkin, check
from games.checkin.routes import ROUTES, snapshot

GAME = Game(name="checkin", section=Checkin, check=check, routes=ROUTES, snapshot=snapshot)
