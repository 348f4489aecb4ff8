"""The lottery wheel over HTTP against a real service: spins earned by a purchase (a rule granting
the wheel's item), a spin answered as an operation with its prize, a retry the same prize, the
prize's stock and the member's spins on GET and in the snapshot, and every refusal named."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.realtime.conftest import Service, error_of, member_client, purchase, serving_with, unique

EXTRA = """
[games.lottery.sure]
title = "Always the voucher, while it lasts"
fallback = "thanks"

[[games.lottery.sure.prizes]]
name = "voucher"
title = "Free shipping"
probability = 1
stock = 1
rewards = { coupons = ["free-shipping"] }

[[games.lottery.sure.prizes]]
name = "thanks"
title = "Thanks"
probability = 0
rewards = { xp = 1 }

[games.lottery.later]
title = "Not yet"
fallback = "thanks"
opens_at = 2999-01-01T00:00:00+08:00

[[games.lottery.later.prizes]]
name = "thanks"
title = "Thanks"
probability = 1

[games.lottery.over]
title = "Over"
fallback = "thanks"
ends_at = 2020-01-01T00:00:00+08:00

[[games.lottery.over.prizes]]
name = "thanks"
title = "Thanks"
probability = 1

[rules.purchase_sure_spin]
event = "purchase"
grant = "item"
item = "lottery:sure"
fixed = 2
"""


@pytest.fixture(scope="module")
def wheels(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from serving_with(redis_url, tmp_path_factory, EXTRA, "lottery")


def buy(svc: Service, member: str) -> dict:
    with svc.client() as shop:
        response = shop.post("/v1/events", json=purchase(member, 10_000))
        assert response.status_code == 200, response.text
        return response.json()


def prize_of(response: httpx.Response) -> tuple[str, bool]:
    [result] = response.json()["results"]
    [data] = [e["data"] for e in result["effects"] if e["type"] == "prize"]
    return data["prize"], data["fallback"]


def test_a_purchase_earns_spins_and_a_spin_gives_the_prize_then_the_fallback(wheels: Service) -> None:
    """The purchase grants 2 spins (an inventory effect); the first spin gets the one voucher, the
    same id again is a duplicate with the same prize, the second spin finds the voucher gone and
    gets the fallback, flagged; GET and the snapshot count the spins and the stock."""
    member = unique("m")
    effects = buy(wheels, member)["results"][0]["effects"]
    assert {"type": "inventory", "data": {"item": "lottery:sure", "amount": 2, "count": 2}} in [
        {"type": e["type"], "data": {k: v for k, v in e["data"].items() if k != "event"}} for e in effects]
    with member_client(wheels, member) as me:
        view = me.get("/v1/games/lottery/sure").json()
        assert view["spins"] == 2 and view["prizes"][0]["left"] == 1 and view["prizes"][0]["probability"] == 1
        first = me.post("/v1/games/lottery/sure/spin", json={"id": "s-1"})
        assert first.status_code == 200, first.text
        assert first.json()["results"][0]["status"] == "applied" and prize_of(first) == ("voucher", False)
        again = me.post("/v1/games/lottery/sure/spin", json={"id": "s-1"})
        assert again.json()["results"][0]["status"] == "duplicate" and prize_of(again) == ("voucher", False)
        second = me.post("/v1/games/lottery/sure/spin", json={"id": "s-2"})
        assert prize_of(second) == ("thanks", True)
        view = me.get("/v1/games/lottery/sure").json()
        assert view["spins"] == 0 and view["prizes"][0]["left"] == 0
        snapshot = me.get("/v1/me").json()
        assert snapshot["games"]["lottery"]["sure"]["spins"] == 0
        assert [(c["item"], c["event"]) for c in snapshot["rewards"] if c["reason"] == "lottery:sure"] == [("free-shipping", "s-1")]
    with wheels.client() as shop:  # the game's own metric, served with the service's
        metrics = shop.get("/metrics").text
    assert 'rekindle_lottery_prizes_total{fallback="false",prize="voucher",wheel="sure"} 1.0' in metrics
    assert 'rekindle_lottery_prizes_total{fallback="true",prize="thanks",wheel="sure"} 1.0' in metrics


def test_refusals_are_named_and_write_nothing(wheels: Service) -> None:
    """No spin left, not open yet, ended, an unknown wheel: each a named refusal."""
    member = unique("m")
    with member_client(wheels, member) as me:
        cases = [
            (me.post("/v1/games/lottery/sure/spin", json={"id": "s-1"}), 409, "insufficient_items", "wheel"),
            (me.post("/v1/games/lottery/later/spin", json={"id": "s-1"}), 409, "not_open", "wheel"),
            (me.post("/v1/games/lottery/over/spin", json={"id": "s-1"}), 409, "ended", "wheel"),
            (me.post("/v1/games/lottery/nope/spin", json={"id": "s-1"}), 404, "not_found", "wheel"),
            (me.get("/v1/games/lottery/nope"), 404, "not_found", "wheel"),
        ]
        for response, status, code, field in cases:
            assert response.status_code == status, response.text
            assert (error_of(response)["code"], error_of(response)["field"]) == (code, field)
        assert me.get("/v1/games/lottery/later").json()["state"] == "upcoming"
        assert me.get("/v1/me").json()["xp"] == 0


@pytest.mark.parametrize(("body", "field"), [({}, "id"), ({"id": "rk:x"}, "id"), ({"id": "s-1", "n": 2}, "n"),
                                             (["s-1"], "body")])
def test_bad_spins_are_422_naming_the_field(wheels: Service, body: object, field: str) -> None:
    with member_client(wheels, unique("m")) as me:
        response = me.post("/v1/games/lottery/sure/spin", json=body)
        assert response.status_code == 422, response.text
        assert error_of(response)["field"] == field
