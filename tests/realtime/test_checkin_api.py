"""The check-in game over HTTP (``POST /v1/me/checkin``), on a service with the dev clock so days
pass: once a day, streaks across days, rewards on the programme's days, make-ups by card and by
points, every refusal named, and the member's state in the snapshot under ``games.checkin``.

config/member_day.toml's ``[games.checkin]``: 5 points a check-in; day 3: 30 points; day 7: 100
points, a ``weekly-10`` coupon and a make-up card; make-ups within 7 days, 200 points each."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.realtime.conftest import ADMIN_KEY, Service, error_of, new_prefix, purchase, start_service, unique

SHANGHAI = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def dev(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_service(redis_url, new_prefix(), tmp_path_factory.mktemp("checkin"), args=("--dev-clock",))
    try:
        yield svc
    finally:
        svc.stop()


class Day:
    """The dev clock, a local day at a time (it only moves forward: each test starts a day later)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        with svc.client(ADMIN_KEY) as admin:
            now = datetime.fromisoformat(admin.get("/v1/admin/clock").json()["now"]).astimezone(SHANGHAI)
        self.today = datetime(now.year, now.month, now.day, 12, tzinfo=SHANGHAI) + timedelta(days=40)
        self._set()

    def next(self, days: int = 1) -> None:
        self.today += timedelta(days=days)
        self._set()

    def label(self, days_ago: int = 0) -> str:
        return (self.today - timedelta(days=days_ago)).date().isoformat()

    def _set(self) -> None:
        with self.svc.client(ADMIN_KEY) as admin:
            response = admin.post("/v1/admin/clock", json={"now": self.today.isoformat()})
            assert response.status_code == 200, response.text


class Member(httpx.Client):
    """The member app: a token minted by the service for each call (the dev clock moves by days,
    and tokens are checked against it)."""

    def __init__(self, svc: Service, member: str) -> None:
        super().__init__(base_url=svc.base_url, timeout=30)
        self.svc, self.member = svc, member

    def request(self, *args: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        with self.svc.client() as shop:
            token = shop.post("/v1/tokens", json={"member": self.member}).json()["token"]
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "authorization": f"Bearer {token}"}
        return super().request(*args, **kwargs)


def as_member(svc: Service, member: str) -> Member:
    return Member(svc, member)


def checkin(client: Member, body: Any = None) -> httpx.Response:
    return client.post("/v1/me/checkin", json=body) if body is not None else client.post("/v1/me/checkin")


def effects(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    return [(e["type"], e["data"]) for e in result["effects"]]


def state(client: Member) -> dict[str, Any]:
    return client.get("/v1/me").json()["games"]["checkin"]  # type: ignore[no-any-return]


def test_twice_a_day_is_one_check_in(dev: Service) -> None:
    """The second check-in of a local day answers duplicate, and the streak counts the day once."""
    day = Day(dev)
    with as_member(dev, unique("m")) as me:
        first = checkin(me)
        assert effects(first) == [
            ("points", {"amount": 5, "balance": 5, "reason": "checkin"}),
            ("streak", {"streak": "checkin", "current": 1, "longest": 1,
                        "day": (day.today.date() - datetime(1970, 1, 1).date()).days, "made_up": False}),
        ]
        again = checkin(me)
        # (Its effects are replayed while the feed keeps them, except on a dev clock moved far from
        # the server's, whose feed entry ids the dedupe entry cannot point to.)
        assert again.json()["results"][0]["status"] == "duplicate"
        assert state(me) == {"title": "每日签到 Check in every day", "current": 1, "longest": 1, "last_day": day.label(),
                             "checked_in_today": True, "makeup_cards": 0, "repairable_day": None}


def test_a_streak_earns_its_rewards_on_its_days(dev: Service) -> None:
    """Seven days in a row: 30 points on day 3; on day 7, 100 points, the coupon and a make-up
    card; the snapshot follows."""
    day = Day(dev)
    with as_member(dev, unique("m")) as me:
        got = []
        for n in range(7):
            if n:
                day.next()
            got.append([(t, d.get("reason") or d.get("item")) for t, d in effects(checkin(me)) if t != "streak"])
        assert got[2] == [("points", "checkin"), ("points", "streak:checkin:3"), ("inventory", "lottery:daily")]
        assert got[6] == [("points", "checkin"), ("points", "streak:checkin:7"), ("reward", "streak:checkin:7"),
                          ("inventory", "checkin:makeup")]
        assert (state(me)["current"], state(me)["makeup_cards"]) == (7, 1)


def test_a_missed_day_is_made_up_with_a_card_or_points(dev: Service) -> None:
    """Days 1-2, day 3 missed, day 4: the streak restarts at 1 and day 3 is repairable; with no
    card, a card make-up is refused naming `pay`; a make-up by points joins the runs (4, so day
    3's reward is paid now); a make-up of a day checked in is refused naming `makeup`."""
    day = Day(dev)
    member = unique("m")
    with dev.client() as shop:
        shop.post("/v1/events", json=purchase(member, 100_000))  # points to pay a make-up with
    with as_member(dev, member) as me:
        checkin(me)
        day.next()
        checkin(me)
        day.next(2)
        checkin(me)
        assert (state(me)["current"], state(me)["repairable_day"]) == (1, day.label(1))
        refused = checkin(me, {"makeup": day.label(1)})  # by card: none held
        assert refused.status_code == 409, refused.text
        assert error_of(refused) == {"code": "insufficient_items", "message": "the member has no make-up card", "field": "pay"}
        made = checkin(me, {"makeup": day.label(1), "pay": "points"})
        # The 200 points paid, and the joined streak of 4 reaches day 3's reward, unpaid before.
        assert [(t, d["amount"]) for t, d in effects(made) if t == "points"] == [("points", -200), ("points", 30)]
        assert ("streak", 4) in [(t, d.get("current")) for t, d in effects(made)]
        assert state(me)["current"] == 4 and state(me)["repairable_day"] is None
        again = checkin(me, {"makeup": day.label(3), "pay": "points"})  # a day checked in
        assert (again.status_code, error_of(again)["code"], error_of(again)["field"]) == (409, "not_missed", "makeup")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"makeup": "2026-02-30"}, "makeup"),
        ({"makeup": 20261203}, "makeup"),
        ({"makeup": "2026-12-03", "pay": "cash"}, "pay"),
        ({"pay": "points"}, "pay"),
        ({"day": "today"}, "day"),
        (["today"], "body"),
    ],
)
def test_bad_check_ins_are_422_naming_the_field(dev: Service, body: object, field: str) -> None:
    """Each bad body names its field and writes nothing."""
    with as_member(dev, unique("m")) as me:
        response = me.post("/v1/me/checkin", json=body)
        assert response.status_code == 422, response.text
        assert error_of(response)["field"] == field
        assert state(me)["last_day"] is None


def test_check_in_takes_a_member_token(dev: Service) -> None:
    """The shop's key is refused, saying which credential the route takes."""
    with dev.client() as shop:
        response = shop.post("/v1/me/checkin")
        assert response.status_code == 401
        assert "member token" in error_of(response)["message"]
