"""The flash sale over HTTP against a real service: a claim answered as an operation, every
refusal named (sold_out, not_open, ended, limit_reached, insufficient_points, not_found, bad
input), and GET showing the stock left and the sale's state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realtime.conftest import Service, error_of, member_client, purchase, serving_with, unique

EXTRA = """
[games.flash.one]
title = "One unit"
item = "free-shipping"
stock = 1
price_points = 0

[games.flash.later]
title = "Not yet"
item = "free-shipping"
stock = 10
opens_at = 2999-01-01T00:00:00+08:00

[games.flash.over]
title = "Over"
item = "free-shipping"
stock = 10
ends_at = 2020-01-01T00:00:00+08:00
"""


@pytest.fixture(scope="module")
def sales(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from serving_with(redis_url, tmp_path_factory, EXTRA, "flash")


def with_points(svc: Service, member: str) -> None:
    with svc.client() as shop:
        assert shop.post("/v1/events", json=purchase(member, 100_000)).status_code == 200


def test_a_claim_wins_once_and_its_retry_is_a_duplicate(sales: Service) -> None:
    """The member pays 100 points and gets the voucher; the same id again is a duplicate; a
    second claim is limit_reached; GET counts the unit gone."""
    member = unique("m")
    with_points(sales, member)
    with member_client(sales, member) as me:
        before = me.get("/v1/games/flash/member-day").json()["left"]
        won = me.post("/v1/games/flash/member-day/claim", json={"id": "c-1"})
        assert won.status_code == 200, won.text
        [result] = won.json()["results"]
        assert result["status"] == "applied"
        assert [(e["type"], e["data"].get("amount"), e["data"].get("item")) for e in result["effects"]] == [
            ("points", -100, None), ("reward", None, "member-day-30")]
        again = me.post("/v1/games/flash/member-day/claim", json={"id": "c-1"})
        assert again.json()["results"][0]["status"] == "duplicate"
        second = me.post("/v1/games/flash/member-day/claim", json={"id": "c-2"})
        assert (second.status_code, error_of(second)["code"], error_of(second)["field"]) == (409, "limit_reached", "sale")
        view = me.get("/v1/games/flash/member-day").json()
        assert view["left"] == before - 1 and view["state"] == "open" and view["price_points"] == 100


def test_refusals_are_named_and_write_nothing(sales: Service) -> None:
    """sold_out after the one unit, not_open before the opening, ended after the end,
    insufficient_points for a member with none, not_found for an unknown sale."""
    first, second, broke = unique("m"), unique("m"), unique("m")
    with member_client(sales, first) as a, member_client(sales, second) as b, member_client(sales, broke) as c:
        assert a.post("/v1/games/flash/one/claim", json={"id": "c-1"}).status_code == 200
        cases = [
            (b.post("/v1/games/flash/one/claim", json={"id": "c-1"}), 409, "sold_out", "sale"),
            (b.post("/v1/games/flash/later/claim", json={"id": "c-1"}), 409, "not_open", "sale"),
            (b.post("/v1/games/flash/over/claim", json={"id": "c-1"}), 409, "ended", "sale"),
            (c.post("/v1/games/flash/member-day/claim", json={"id": "c-1"}), 409, "insufficient_points", "sale"),
            (b.post("/v1/games/flash/nope/claim", json={"id": "c-1"}), 404, "not_found", "sale"),
        ]
        for response, status, code, field in cases:
            assert response.status_code == status, response.text
            assert (error_of(response)["code"], error_of(response)["field"]) == (code, field)
        assert b.get("/v1/games/flash/one").json()["state"] == "sold_out"
        assert b.get("/v1/games/flash/later").json()["state"] == "upcoming"
        assert b.get("/v1/me").json()["points"]["balance"] == 0


@pytest.mark.parametrize(("body", "field"), [({}, "id"), ({"id": "rk:x"}, "id"), ({"id": "c-1", "qty": 2}, "qty"),
                                             (["c-1"], "body")])
def test_bad_claims_are_422_naming_the_field(sales: Service, body: object, field: str) -> None:
    with member_client(sales, unique("m")) as me:
        response = me.post("/v1/games/flash/member-day/claim", json=body)
        assert response.status_code == 422, response.text
        assert error_of(response)["field"] == field
