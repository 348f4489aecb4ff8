"""The bargain over HTTP against a real service: start (201, then 200 with the same bargain while
it is open), friends help until the floor (the owner's coupon, each help on the owner's feed),
GET shows the price and the helps, and every refusal is named."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realtime.conftest import Service, error_of, member_client, serving_with, unique

EXTRA = """
[catalog.cup]
title = "A cup"
value_cents = 1000

[games.bargain.cup]
title = "Three friends, one free cup"
item = "cup"
price_cents = 1000
floor_cents = 0
helpers = 3
algorithm = "red_packet"
helps_per_day = 5
"""


@pytest.fixture(scope="module")
def bargains(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from serving_with(redis_url, tmp_path_factory, EXTRA, "bargain")


def test_friends_help_a_bargain_to_its_floor(bargains: Service) -> None:
    owner = unique("owner")
    with member_client(bargains, owner) as me:
        started = me.post("/v1/games/bargain", json={"campaign": "cup", "item": "cup"})
        assert started.status_code == 201, started.text
        view = started.json()
        assert (view["price_cents"], view["current_cents"], view["state"], view["helps"]) == (1000, 1000, "open", [])
        assert me.post("/v1/games/bargain", json={"campaign": "cup"}).json()["id"] == view["id"]  # 200: the open one
        bargain = view["id"]
        cuts = []
        for n in range(3):
            with member_client(bargains, unique("friend")) as friend:
                helped = friend.post(f"/v1/games/bargain/{bargain}/help", json={"id": "help-1"})
                assert helped.status_code == 200, helped.text
                [result] = helped.json()["results"]
                assert result["status"] == "applied"
                cuts += [e["data"]["cut_cents"] for e in result["effects"] if e["type"] == "bargain_helped"]
        assert sum(cuts) == 1000 and min(cuts) >= 1
        view = me.get(f"/v1/games/bargain/{bargain}").json()
        assert (view["current_cents"], view["state"], len(view["helps"])) == (0, "done", 3)
        snapshot = me.get("/v1/me").json()
        assert snapshot["games"]["bargain"]["cup"]["state"] == "done"
        assert [c["item"] for c in snapshot["rewards"] if c["reason"] == f"bargain:{bargain}"] == ["cup"], snapshot["rewards"]
        with member_client(bargains, unique("late")) as late:
            closed = late.post(f"/v1/games/bargain/{bargain}/help", json={"id": "help-1"})
            assert (closed.status_code, error_of(closed)["code"]) == (409, "bargain_closed")


def test_refusals_are_named_and_write_nothing(bargains: Service) -> None:
    owner, friend = unique("owner"), unique("friend")
    with member_client(bargains, owner) as me, member_client(bargains, friend) as other:
        bargain = me.post("/v1/games/bargain", json={"campaign": "cup"}).json()["id"]
        assert other.post(f"/v1/games/bargain/{bargain}/help", json={"id": "h-1"}).status_code == 200
        cases = [
            (me.post(f"/v1/games/bargain/{bargain}/help", json={"id": "h-1"}), 409, "own_bargain", "bargain"),
            (other.post(f"/v1/games/bargain/{bargain}/help", json={"id": "h-2"}), 409, "already_helped", "bargain"),
            (other.post("/v1/games/bargain/cup.9.nobody/help", json={"id": "h-3"}), 409, "bargain_closed", "bargain"),
            (other.post("/v1/games/bargain/nope/help", json={"id": "h-3"}), 404, "not_found", "bargain"),
            (me.post("/v1/games/bargain", json={"campaign": "nope"}), 404, "not_found", "campaign"),
            (me.post("/v1/games/bargain", json={"campaign": "cup", "item": "mug"}), 422, "invalid", "item"),
            (me.post("/v1/games/bargain", json={"campaign": "cup", "colour": "red"}), 422, "invalid", "colour"),
            (other.get("/v1/games/bargain/cup.9.nobody"), 404, "not_found", "bargain"),
        ]
        for response, status, code, field in cases:
            assert response.status_code == status, response.text
            assert (error_of(response)["code"], error_of(response)["field"]) == (code, field)


def test_a_new_member_cuts_as_the_campaigns_new_member_units(bargains: Service) -> None:
    """The example's teapot (8 units, a member who joined this week counts 2): a helper the shop
    says joined today takes two units at once, so with 4 such helpers the bargain is done."""
    owner = unique("owner")
    with member_client(bargains, owner) as me:
        bargain = me.post("/v1/games/bargain", json={"campaign": "teapot"}).json()["id"]
        for n in range(4):
            friend = unique("new")
            with bargains.client() as shop:
                assert shop.put(f"/v1/members/{friend}", json={"joined_at": "2026-01-01T00:00:00+08:00"}).status_code \
                    in (200, 204)
            with member_client(bargains, friend) as helper:
                helped = helper.post(f"/v1/games/bargain/{bargain}/help", json={"id": "h-1"})
                assert helped.status_code == 200, helped.text
        view = me.get(f"/v1/games/bargain/{bargain}").json()
        assert view["state"] != "done" and len(view["helps"]) == 4  # joined long ago: not new, one unit each
        for n in range(4):
            friend = unique("new")
            with bargains.client() as shop:
                shop.put(f"/v1/members/{friend}", json={"joined_at": now_iso()})
            with member_client(bargains, friend) as helper:
                assert helper.post(f"/v1/games/bargain/{bargain}/help", json={"id": "h-1"}).status_code == 200
                if me.get(f"/v1/games/bargain/{bargain}").json()["state"] == "done":
                    break
        view = me.get(f"/v1/games/bargain/{bargain}").json()
        assert (view["state"], view["current_cents"], len(view["helps"])) == ("done", 990, 6)  # 4 + 2 new (2 units each)


def now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")
