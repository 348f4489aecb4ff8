"""Members: profiles the shop sends (PUT) and the snapshot an app draws from (GET)."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
import redis

from tests.realtime.conftest import Service, error_of, member_keys, purchase, unique


def test_put_profile_then_get_shows_it(shop: httpx.Client, member: str) -> None:
    """A profile PUT (joined_at, birthday, referrer, tags) shows in the member's snapshot."""
    referrer = unique("m")
    response = shop.put(
        f"/v1/members/{member}",
        json={"joined_at": "2025-03-01T09:30:00+08:00", "birthday": "03-21", "referrer": referrer, "tags": ["vip", "tea", "vip"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["member"] == member

    snapshot = shop.get(f"/v1/members/{member}")
    assert snapshot.status_code == 200, snapshot.text
    body = snapshot.json()
    assert body["profile"] == {
        "joined_at_ms": int(datetime.fromisoformat("2025-03-01T09:30:00+08:00").timestamp() * 1000),
        "birthday": "03-21",
        "referrer": referrer,
        "tags": ["tea", "vip"],
    }
    assert body["xp"] == 0
    assert body["points"]["balance"] == 150  # joined_at: the example's [care.welcome], once
    assert body["tier"]["id"] == "bronze"
    assert body["feed_id"] != "0-0"
    again = shop.put(f"/v1/members/{member}", json={"joined_at": "2025-03-01T09:30:00+08:00"})
    assert again.status_code == 200 and shop.get(f"/v1/members/{member}").json()["points"]["balance"] == 150


def test_put_profile_keeps_fields_not_given(shop: httpx.Client, member: str) -> None:
    """A later PUT with some fields leaves the others as they were, and awards are untouched."""
    assert shop.post("/v1/events", json=purchase(member)).status_code == 200
    assert shop.put(f"/v1/members/{member}", json={"birthday": "02-29", "joined_at": 1_700_000_000_000}).status_code == 200
    assert shop.put(f"/v1/members/{member}", json={"tags": ["new"]}).status_code == 200
    body = shop.get(f"/v1/members/{member}").json()
    assert body["profile"]["birthday"] == "02-29"
    assert body["profile"]["joined_at_ms"] == 1_700_000_000_000
    assert body["profile"]["tags"] == ["new"]
    assert body["xp"] == 299
    assert body["points"]["balance"] == 299 + 150  # the purchase's, and the welcome's ([care.welcome])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"joined_at": "last spring"}, "joined_at"),
        ({"joined_at": "2025-03-01T09:30:00"}, "joined_at"),
        ({"joined_at": 1.5}, "joined_at"),
        ({"joined_at": True}, "joined_at"),
        ({"birthday": "3-21"}, "birthday"),
        ({"birthday": "02-30"}, "birthday"),
        ({"birthday": "13-01"}, "birthday"),
        ({"birthday": "2000-03-21"}, "birthday"),
        ({"birthday": 321}, "birthday"),
        ({"birthday": "\u0660\u0663-\u0662\u0661"}, "birthday"),
        ({"referrer": "m{1}"}, "referrer"),
        ({"referrer": ""}, "referrer"),
        ({"referrer": None}, "referrer"),
        ({"tags": "vip"}, "tags"),
        ({"tags": [f"t{i}" for i in range(33)]}, "tags"),
        ({"tags": ["ok", "not ok"]}, "tags[1]"),
        ({"tags": ["ok", 7]}, "tags[1]"),
        ({"nickname": "Tea Fan"}, "nickname"),
        ({"xp": 100000}, "xp"),
        ({}, "body"),
        (["03-21"], "body"),
        ({"birthday": "03-21", "favourite": "oolong"}, "favourite"),
    ],
    ids=[
        "joined_at_garbage", "joined_at_naive", "joined_at_float", "joined_at_bool",
        "birthday_short", "birthday_feb_30", "birthday_month_13", "birthday_with_year", "birthday_number",
        "birthday_arabic_indic_digits",
        "referrer_braces", "referrer_empty", "referrer_null",
        "tags_string", "tags_33", "tag_with_space", "tag_number", "unknown_key", "xp_is_not_a_profile_field",
        "empty_object", "array", "good_and_unknown",
    ],
)
def test_invalid_profile_is_422_naming_the_field(
    shop: httpx.Client, sync_redis: redis.Redis, service: Service, member: str, body: object, field: str
) -> None:
    """An invalid profile answers 422 naming the field, and nothing of it is stored."""
    response = shop.put(f"/v1/members/{member}", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    assert shop.get(f"/v1/members/{member}").json()["xp"] == 0
    assert member_keys(sync_redis, service.prefix, member) == []


def test_member_cannot_refer_itself(shop: httpx.Client, member: str) -> None:
    """A referrer equal to the member answers 422 on field referrer."""
    response = shop.put(f"/v1/members/{member}", json={"referrer": member})
    assert response.status_code == 422
    assert error_of(response)["field"] == "referrer"


@pytest.mark.parametrize("body", [b"", b"{birthday: 03-21}"], ids=["empty", "bad_json"])
def test_profile_body_not_json_is_400(shop: httpx.Client, member: str, body: bytes) -> None:
    """A profile body that is empty or not JSON answers 400 on field body."""
    response = shop.put(f"/v1/members/{member}", content=body)
    assert response.status_code == 400
    assert error_of(response)["field"] == "body"


def test_profile_body_over_64_kib_is_413(shop: httpx.Client, member: str) -> None:
    """A profile body over 64 KiB answers 413 on field body."""
    response = shop.put(f"/v1/members/{member}", json={"tags": ["x" * 70_000]})
    assert response.status_code == 413
    assert error_of(response)["field"] == "body"


def test_a_member_with_no_history_answers_an_empty_snapshot(shop: httpx.Client, service: Service) -> None:
    """GET of a valid member id with no events and no profile answers 200 with an empty snapshot,
    as does GET /v1/me for a valid token of such a member."""
    member = unique("m")
    response = shop.get(f"/v1/members/{member}")
    assert response.status_code == 200, response.text
    snap = response.json()
    assert (snap["member"], snap["xp"], snap["points"]["balance"], snap["feed_id"]) == (member, 0, 0, "0-0")
    assert all(q["progress"] == 0 for q in snap["quests"]) and snap["quests"]
    token = shop.post("/v1/tokens", json={"member": member}).json()["token"]
    me = httpx.get(f"{service.base_url}/v1/me", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json() == snap


def test_feed_id_is_the_last_effect_of_the_last_post(shop: httpx.Client, member: str) -> None:
    """The snapshot's feed_id equals the id of the last effect the last POST returned."""
    first = shop.post("/v1/events", json=purchase(member)).json()["results"][0]
    assert shop.get(f"/v1/members/{member}").json()["feed_id"] == first["effects"][-1]["id"]
    second = shop.post("/v1/events", json={"id": unique("c"), "member": member, "type": "checkin"}).json()["results"][0]
    assert second["effects"]
    snapshot = shop.get(f"/v1/members/{member}").json()
    assert snapshot["feed_id"] == second["effects"][-1]["id"]
    assert snapshot["feed_id"] != first["effects"][-1]["id"]


def test_duplicate_leaves_feed_id_alone(shop: httpx.Client, member: str) -> None:
    """A duplicate adds nothing to the feed: feed_id stays at the applied event's last effect."""
    event = purchase(member)
    effects = shop.post("/v1/events", json=event).json()["results"][0]["effects"]
    assert shop.post("/v1/events", json=event).json()["results"][0]["status"] == "duplicate"
    assert shop.get(f"/v1/members/{member}").json()["feed_id"] == effects[-1]["id"]


def test_snapshot_lists_quests_with_progress_and_state(shop: httpx.Client, member: str) -> None:
    """The snapshot lists every configured quest with progress, target and state."""
    shop.post("/v1/events", json=purchase(member, 10000))
    quests = {q["id"]: q for q in shop.get(f"/v1/members/{member}").json()["quests"]}
    assert set(quests) == {
        "first_order", "daily_checkin", "daily_share", "weekly_spend", "weekly_reviews",
        "photo_reviewer", "double_twelve_big_orders", "invite_friends",
    }
    assert (quests["first_order"]["progress"], quests["first_order"]["state"]) == (1, "completed")
    assert (quests["weekly_spend"]["progress"], quests["weekly_spend"]["target"]) == (10000, 30000)
    assert quests["weekly_spend"]["state"] == "active"
    assert quests["weekly_spend"]["deadline_ms"] is not None
    assert quests["invite_friends"]["progress"] == 0


def test_tier_up_shows_in_snapshot(shop: httpx.Client, member: str) -> None:
    """A purchase that lifts XP past 1000 makes the member Silver with its welcome rewards."""
    [result] = shop.post("/v1/events", json=purchase(member, 100_000)).json()["results"]
    types = [e["type"] for e in result["effects"]]
    assert "tier_up" in types
    tier_up = next(e for e in result["effects"] if e["type"] == "tier_up")
    assert tier_up["data"] == {"from": "bronze", "to": "silver"}
    body = shop.get(f"/v1/members/{member}").json()
    # XP: 1000 for the purchase + 100 first_order + 300 weekly_spend (100000 >= 30000 cents);
    # points: 1000 (Bronze rate, the tier held before the event) + 100 first_order + 200 Silver.
    assert body["xp"] == 1400
    assert body["points"]["balance"] == 1300
    assert body["tier"]["id"] == "silver"
    assert {r["item"] for r in body["rewards"]} == {"free-shipping", "weekly-10", "silver-welcome"}
