"""Collect cards over HTTP against a real service: draws earned by purchases (a rule granting the
campaign's item), a draw answered as an operation with its card, a gift to a friend landing on the
receiver's GET and feed, combining a set, and every refusal named with nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.realtime.conftest import Service, error_of, member_client, purchase, serving_with, unique

EXTRA = """
[games.cards.duo]
title = "Two cards make a set"
deadline = 2099-01-01T00:00:00+08:00
pool_cents = 1_000
cards = [
  { name = "sun", title = "Sun", weight = 1 },
  { name = "moon", title = "Moon", weight = 1 },
]

[games.cards.later]
title = "Not yet"
opens_at = 2999-01-01T00:00:00+08:00
deadline = 2999-02-01T00:00:00+08:00
pool_cents = 0
cards = [
  { name = "sun", title = "Sun", weight = 1 },
  { name = "moon", title = "Moon", weight = 1 },
]

[rules.purchase_duo_draws]
event = "purchase"
grant = "item"
item = "cards:duo"
fixed = 30
"""


@pytest.fixture(scope="module")
def cards(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from serving_with(redis_url, tmp_path_factory, EXTRA, "cards")


def buy(svc: Service, member: str) -> None:
    with svc.client() as shop:
        response = shop.post("/v1/events", json=purchase(member, 10_000))
        assert response.status_code == 200, response.text


def card_of(response: httpx.Response) -> str:
    [result] = response.json()["results"]
    [data] = [e["data"] for e in result["effects"] if e["type"] == "card_drawn"]
    return data["card"]  # type: ignore[no-any-return]


def held(me: httpx.Client, campaign: str = "duo") -> dict[str, int]:
    return {c["card"]: c["held"] for c in me.get(f"/v1/games/cards/{campaign}").json()["cards"] if c["held"]}


def test_draw_gift_and_combine(cards: Service) -> None:
    """A purchase grants 30 draws; a draw gives a card (a retry the same card); the member draws
    until both cards are held, gives a spare to a friend (on the friend's GET), and
    combines the set: GET says combined, the set is gone, a second combine is refused."""
    member, friend = unique("m"), unique("f")
    buy(cards, member)
    buy(cards, friend)
    with member_client(cards, member) as me, member_client(cards, friend) as other:
        view = me.get("/v1/games/cards/duo").json()
        assert view["chances"] == 30 and view["state"] == "open" and [c["probability"] for c in view["cards"]] == [0.5, 0.5]
        first = me.post("/v1/games/cards/duo/draw", json={"id": "d-0"})
        assert first.status_code == 200, first.text
        again = me.post("/v1/games/cards/duo/draw", json={"id": "d-0"})
        assert again.json()["results"][0]["status"] == "duplicate" and card_of(again) == card_of(first)
        n = 1
        while len(held(me)) < 2 or max(held(me).values()) < 2:
            assert n < 30, "30 fair draws of two cards, all the same: 1 in 2^29"
            assert me.post("/v1/games/cards/duo/draw", json={"id": f"d-{n}"}).status_code == 200
            n += 1
        spare = next(c for c, k in held(me).items() if k >= 2)
        gift = me.post("/v1/games/cards/duo/gift", json={"id": "g-1", "to": friend, "card": spare})
        assert gift.status_code == 200, gift.text
        assert sorted(e["type"] for e in gift.json()["results"][0]["effects"]) == ["card_given", "inventory"]
        assert held(other).get(spare) == 1
        combined = me.post("/v1/games/cards/duo/combine", json={"id": "c-1"})
        assert combined.status_code == 200, combined.text
        assert "cards_combined" in [e["type"] for e in combined.json()["results"][0]["effects"]]
        view = me.get("/v1/games/cards/duo").json()
        assert view["combined"] is True and view["share"] is None
        assert me.get("/v1/me").json()["games"]["cards"]["duo"]["combined"] is True
        refused = me.post("/v1/games/cards/duo/combine", json={"id": "c-2"})
        assert refused.status_code == 409 and error_of(refused)["code"] in ("already_combined", "no_full_set")


def test_refusals_are_named_and_write_nothing(cards: Service) -> None:
    member, friend = unique("m"), unique("f")
    buy(cards, friend)
    with member_client(cards, member) as me:
        cases = [
            (me.post("/v1/games/cards/duo/draw", json={"id": "d-1"}), 409, "no_chance", "campaign"),
            (me.post("/v1/games/cards/duo/combine", json={"id": "c-1"}), 409, "no_full_set", "campaign"),
            (me.post("/v1/games/cards/duo/gift", json={"id": "g-1", "to": friend, "card": "sun"}), 409, "card_not_held",
             "card"),
            (me.post("/v1/games/cards/duo/gift", json={"id": "g-1", "to": member, "card": "sun"}), 409, "self_gift", "to"),
            (me.post("/v1/games/cards/duo/gift", json={"id": "g-1", "to": unique("nobody"), "card": "sun"}), 409,
             "unknown_member", "to"),
            (me.post("/v1/games/cards/duo/gift", json={"id": "g-1", "to": friend, "card": "star"}), 422, "invalid", "card"),
            (me.post("/v1/games/cards/duo/gift", json={"id": "g-1", "card": "sun"}), 422, "invalid", "to"),
            (me.post("/v1/games/cards/later/draw", json={"id": "d-1"}), 409, "not_open", "campaign"),
            (me.post("/v1/games/cards/nope/draw", json={"id": "d-1"}), 404, "not_found", "campaign"),
            (me.get("/v1/games/cards/nope"), 404, "not_found", "campaign"),
        ]
        for response, status, code, field in cases:
            assert response.status_code == status, response.text
            assert (error_of(response)["code"], error_of(response)["field"]) == (code, field)
        assert me.get("/v1/me").json()["xp"] == 0  # nothing written: the member was never created
        assert me.get("/v1/games/cards/later").json()["state"] == "upcoming"


@pytest.mark.parametrize(("path", "body", "field"), [
    ("draw", {}, "id"), ("draw", {"id": "rk:x"}, "id"), ("draw", {"id": "d-1", "n": 2}, "n"), ("draw", ["d"], "body"),
    ("gift", {"id": "g-1", "to": 5, "card": "sun"}, "to"), ("gift", {"id": "g-1", "to": "x", "card": 1}, "card"),
    ("combine", {}, "id"),
])
def test_bad_input_is_422_naming_the_field(cards: Service, path: str, body: object, field: str) -> None:
    with member_client(cards, unique("m")) as me:
        response = me.post(f"/v1/games/cards/duo/{path}", json=body)
        assert response.status_code == 422, response.text
        assert error_of(response)["field"] == field
