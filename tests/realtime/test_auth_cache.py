"""Member tokens checked once for their signature, every time for their times: a remembered
token still expires by the service's clock, and a refused one is never remembered."""

from __future__ import annotations

import jwt
import pytest

from engine.clock import ManualClock
from realtime.auth import ALGORITHM, Auth
from realtime.errors import Unauthorized

SECRET = "s" * 32


def token(sub: str, exp_s: int, secret: str = SECRET) -> str:
    return jwt.encode({"sub": sub, "exp": exp_s}, secret, algorithm=ALGORITHM)


def test_a_remembered_token_still_expires_by_the_clock() -> None:
    """Verified at 1,000 s, it answers its member from memory until its exp; at exp it is expired."""
    clock = ManualClock(1_000_000)
    auth = Auth(frozenset(), frozenset(), SECRET, clock)
    good = token("m-1", 2_000)
    assert auth.verify_member_token(good).member == "m-1"
    assert auth.verify_member_token(good) == (("m-1", 2_000_000))
    clock.set(2_000_000)
    with pytest.raises(Unauthorized, match="expired"):
        auth.verify_member_token(good)


def test_a_forged_token_is_refused_every_time() -> None:
    """A token signed with another secret is refused, and asking again does not let it in."""
    auth = Auth(frozenset(), frozenset(), SECRET, ManualClock(1_000_000))
    forged = token("m-1", 2_000, secret="x" * 32)
    for _ in range(2):
        with pytest.raises(Unauthorized, match="invalid"):
            auth.verify_member_token(forged)
