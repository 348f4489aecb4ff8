"""The bargain over HTTP against a real service: start (201, then 200 with the same bargain while
it is open), friends help until the floor (the owner's coupon, each help on the owner's feed),
GET shows the price and the helps, and every refusal is named. The admin's anti-collusion report
finds a ring of three friends and an owner helped only by new members, with the numbers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realtime.conftest import ADMIN_KEY, Service, error_of, member_client, serving_with, unique

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

[games.bargain.ring]
title = "Two friends, one free cup"
item = "cup"
price_cents = 1000
helpers = 2
helps_per_day = 20

[games.bargain.fresh]
title = "Ten friends, one free cup"
item = "cup"
price_cents = 1000
helpers = 10
helps_per_day = 20
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


LONG_AGO = "2020-01-01T00:00:00+00:00"
REPORT = "/v1/admin/games/bargain/report"


def joined(svc: Service, member: str, when: str) -> None:
    with svc.client() as shop:
        assert shop.put(f"/v1/members/{member}", json={"joined_at": when}).status_code in (200, 204)


def help_until_applied(svc: Service, helper: str, bargain: str, op_id: str) -> None:
    """One help, sent again while the bargain's last help is still being applied (in_progress)."""
    with member_client(svc, helper) as client:
        for _ in range(50):
            helped = client.post(f"/v1/games/bargain/{bargain}/help", json={"id": op_id})
            if helped.status_code != 409 or error_of(helped)["code"] != "in_progress":
                break
        assert helped.status_code == 200 and helped.json()["results"][0]["status"] == "applied", helped.text


def test_the_report_shows_a_ring_of_three_and_an_owner_helped_only_by_new_members(bargains: Service) -> None:
    """Three long-standing members each start three bargains in turn, the other two helping each:
    a ring, three helps each way. An owner helped by five members who joined today is flagged
    (5 of 5); one helped by five long-standing members is not."""
    ring = sorted(unique("ring") for _ in range(3))
    for m in ring:
        joined(bargains, m, LONG_AGO)
    for k in range(3):
        for owner in ring:
            with member_client(bargains, owner) as me:
                started = me.post("/v1/games/bargain", json={"campaign": "ring"})
                assert started.status_code == 201, started.text
            for helper in ring:
                if helper != owner:
                    help_until_applied(bargains, helper, started.json()["id"], f"h-{k}-{owner}")
    fresh, steady = unique("fresh"), unique("steady")
    for owner, when in ((fresh, now_iso()), (steady, LONG_AGO)):
        with member_client(bargains, owner) as me:
            bargain = me.post("/v1/games/bargain", json={"campaign": "fresh"}).json()["id"]
        for _ in range(5):
            helper = unique("helper")
            joined(bargains, helper, when)
            help_until_applied(bargains, helper, bargain, "h-1")
    admin = bargains.client(ADMIN_KEY)
    got = admin.get(REPORT, params={"campaign": "ring"})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["campaign"] == "ring"
    [found] = [r for r in body["rings"] if r["members"] == ring]
    assert found["size"] == 3
    assert sorted((h["helper"], h["owner"], h["helps"]) for h in found["helps"]) == [
        (a, b, 3) for a in ring for b in ring if a != b]
    assert not any(o["owner"] in ring for o in body["new_member_owners"])
    flagged = admin.get(REPORT, params={"campaign": "fresh"}).json()["new_member_owners"]
    assert {"owner": fresh, "helps": 5, "from_new": 5, "share": 1.0} in flagged
    assert steady not in [o["owner"] for o in flagged]
    assert body["thresholds"]["ring_min_helps"] == 3 and body["thresholds"]["new_share"] == 0.8


def test_the_report_takes_a_known_campaign_and_the_admin_key(bargains: Service) -> None:
    admin = bargains.client(ADMIN_KEY)
    with member_client(bargains, unique("m")) as member:
        cases = [
            (admin.get(REPORT, params={"campaign": "nope"}), 404, "not_found", "campaign"),
            (admin.get(REPORT), 422, "invalid", "campaign"),
            (admin.get(REPORT, params={"campaign": "no/such"}), 422, "invalid", "campaign"),
            (member.get(REPORT, params={"campaign": "ring"}), 401, "unauthorized", None),
            (bargains.client().get(REPORT, params={"campaign": "ring"}), 401, "unauthorized", None),
        ]
        for response, status, code, field in cases:
            assert response.status_code == status, response.text
            assert error_of(response)["code"] == code
            if field is not None:
                assert error_of(response)["field"] == field
    empty = admin.get(REPORT, params={"campaign": "cup"})
    assert empty.status_code == 200 and empty.json()["devices"] == []
