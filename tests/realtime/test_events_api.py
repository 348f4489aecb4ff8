"""POST /v1/events over real HTTP: effects, idempotency, batches, exactly-once under concurrency.

Expected numbers come from config/member_day.toml: a purchase earns 1 XP and 1 point per 100
cents (`rules.purchase_xp`, `rules.purchase_points`; Bronze multiplies points by 1.0), the first
purchase completes `quests.first_order` (+100 XP, +100 points, a `free-shipping` coupon), and
purchases add their amount to `quests.weekly_spend` (target 30000). An invite earns 300 points
(`rules.invite_points`, no cap); the third completes `quests.invite_friends` (+500 XP, +500 points).
"""

from __future__ import annotations

import re
import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import redis

from engine.keys import Keys
from tests.realtime.conftest import Service, error_of, member_keys, purchase, unique

FIRST_PURCHASE_EFFECTS = [
    ("xp", {"amount": 199, "total": 199, "reason": "purchase_xp"}),
    ("points", {"amount": 199, "balance": 199, "reason": "purchase_points"}),
    ("quest_completed", {"quest": "first_order", "progress": 1, "target": 1}),
    ("xp", {"amount": 100, "total": 299, "reason": "quest:first_order"}),
    ("points", {"amount": 100, "balance": 299, "reason": "quest:first_order"}),
    ("reward", {"kind": "coupon", "item": "free-shipping", "reason": "quest:first_order"}),
    ("quest_progress", {"quest": "weekly_spend", "progress": 19900, "target": 30000}),
]


def effects_of(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(e["type"], _without_coupon_id(e["data"]) if e["type"] == "reward" else e["data"]) for e in result["effects"]]


def _without_coupon_id(data: dict[str, Any]) -> dict[str, Any]:
    """A reward's coupon id (``<operation id>:c<n>``) and expiry, checked, then left out, so
    fixtures read the same for every event id."""
    assert re.fullmatch(r".+:c[0-9]+", data["coupon"]), data
    assert data["expires_at_ms"] > 0, data
    return {k: v for k, v in data.items() if k not in ("coupon", "expires_at_ms")}


def recent_iso(seconds_ago: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat()


def balance(shop: httpx.Client, member: str) -> int:
    response = shop.get(f"/v1/members/{member}")
    assert response.status_code == 200, response.text
    return int(response.json()["points"]["balance"])


def test_single_purchase_applies_with_effects(shop: httpx.Client, member: str) -> None:
    """A new member's 19900-cent purchase earns 199 XP and 199 points, then completes first_order."""
    event = purchase(member, 19900)
    response = shop.post("/v1/events", json=event)
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result["id"] == event["id"]
    assert result["member"] == member
    assert result["status"] == "applied"
    assert effects_of(result) == FIRST_PURCHASE_EFFECTS
    assert all(isinstance(e["id"], str) and e["id"] for e in result["effects"])

    snapshot = shop.get(f"/v1/members/{member}").json()
    assert snapshot["xp"] == 299
    assert snapshot["points"]["balance"] == 299
    assert snapshot["tier"]["id"] == "bronze"
    assert snapshot["tier"]["next"]["xp_to_go"] == 1000 - 299
    quests = {q["id"]: q for q in snapshot["quests"]}
    assert quests["first_order"]["state"] == "completed"
    assert quests["weekly_spend"]["progress"] == 19900
    assert [r["item"] for r in snapshot["rewards"]] == ["free-shipping"]


def test_second_purchase_does_not_repeat_once_quest(shop: httpx.Client, member: str) -> None:
    """A second purchase earns its own XP and points but not first_order again."""
    assert shop.post("/v1/events", json=purchase(member, 19900)).status_code == 200
    [result] = shop.post("/v1/events", json=purchase(member, 5000)).json()["results"]
    assert result["status"] == "applied"
    assert effects_of(result) == [
        ("xp", {"amount": 50, "total": 349, "reason": "purchase_xp"}),
        ("points", {"amount": 50, "balance": 349, "reason": "purchase_points"}),
        ("quest_progress", {"quest": "weekly_spend", "progress": 24900, "target": 30000}),
    ]


def test_same_event_again_is_duplicate(shop: httpx.Client, member: str) -> None:
    """The same id and body again answers duplicate, replays the original award's effects (so a
    backend that lost the first reply learns them) and changes nothing."""
    event = purchase(member)
    [first] = shop.post("/v1/events", json=event).json()["results"]
    assert first["status"] == "applied"
    response = shop.post("/v1/events", json=event)
    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["status"] == "duplicate"
    assert result["effects"] == first["effects"]
    assert result["original"] == first["effects"][0]["id"].rsplit("-", 1)[0]
    assert balance(shop, member) == 299


def test_same_id_for_another_member_is_a_new_event(shop: httpx.Client, member: str) -> None:
    """Event ids are unique per member: another member may use the same id."""
    other = unique("m")
    event_id = unique("order")
    first = shop.post("/v1/events", json=purchase(member, event_id=event_id)).json()["results"][0]
    second = shop.post("/v1/events", json=purchase(other, event_id=event_id)).json()["results"][0]
    assert (first["status"], second["status"]) == ("applied", "applied")
    assert balance(shop, other) == 299


def test_same_id_other_body_is_idempotency_conflict(shop: httpx.Client, member: str) -> None:
    """Reusing an id with a different body answers 409 idempotency_conflict on field id."""
    event = purchase(member, 19900)
    assert shop.post("/v1/events", json=event).status_code == 200
    changed = {**event, "data": {"amount": 100}}
    response = shop.post("/v1/events", json=changed)
    assert response.status_code == 409, response.text
    error = error_of(response)
    assert error["code"] == "idempotency_conflict"
    assert error["field"] == "id"
    [result] = response.json()["results"]
    assert result["status"] == "rejected"
    assert balance(shop, member) == 299


def test_an_id_in_the_engines_namespace_is_refused_everywhere(shop: httpx.Client, member: str) -> None:
    """An event, a spend or a coupon use whose id starts with ``rk:`` (the engine's own operations,
    such as a points-expiry job's ``rk:expire:<member>:<ms>``) is refused with 422 on field id,
    and nothing is written: no client can take a scheduled operation's id first."""
    job_id = f"rk:expire:{member}:1798732800000"
    response = shop.post("/v1/events", json=purchase(member, 19900, event_id=job_id))
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == "id" and "reserved" in error_of(response)["message"]
    response = shop.post(f"/v1/members/{member}/points/spend", json={"id": job_id, "amount": 1})
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == "id"
    response = shop.post(f"/v1/members/{member}/coupons/c-1/use", json={"id": job_id, "order": "o-1"})
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == "id"
    assert balance(shop, member) == 0


def test_explicit_at_is_part_of_the_body(shop: httpx.Client, member: str) -> None:
    """The same id again with an explicit `at` the first post did not give is a 409 conflict."""
    event = purchase(member)
    assert shop.post("/v1/events", json=event).status_code == 200
    response = shop.post("/v1/events", json={**event, "at": recent_iso(60)})
    assert response.status_code == 409, response.text
    assert error_of(response)["code"] == "idempotency_conflict"
    assert balance(shop, member) == 299


def test_at_as_iso_or_epoch_ms_names_the_same_event(shop: httpx.Client, member: str) -> None:
    """An `at` given as ISO 8601 and as the same instant in epoch ms is one event: duplicate."""
    at_ms = (int(time.time()) - 3600) * 1000
    iso = datetime.fromtimestamp(at_ms / 1000, timezone(timedelta(hours=8))).isoformat()
    event = {**purchase(member), "at": iso}
    assert shop.post("/v1/events", json=event).json()["results"][0]["status"] == "applied"
    again = shop.post("/v1/events", json={**event, "at": at_ms}).json()["results"][0]
    assert again["status"] == "duplicate"
    assert balance(shop, member) == 299


def test_old_at_inside_the_window_applies_and_dedupes(shop: httpx.Client, member: str) -> None:
    """An event 13 days old (retention 14) applies, and its retry is still a duplicate."""
    event = {**purchase(member), "at": recent_iso(13 * 86_400)}
    assert shop.post("/v1/events", json=event).json()["results"][0]["status"] == "applied"
    assert shop.post("/v1/events", json=event).json()["results"][0]["status"] == "duplicate"
    assert balance(shop, member) == 299


def test_at_with_z_suffix_and_small_future_skew_is_accepted(shop: httpx.Client, member: str) -> None:
    """`at` in UTC with a Z suffix, or up to the allowed skew ahead, is accepted."""
    zulu = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ahead = (datetime.now(timezone.utc) + timedelta(seconds=60)).isoformat()
    for at in (zulu, ahead):
        response = shop.post("/v1/events", json={**purchase(member, 100), "at": at})
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["status"] == "applied"


def test_form_encoded_content_type_is_read_as_json(shop: httpx.Client, member: str) -> None:
    """A JSON body sent as curl -d sends it (form content type) is accepted."""
    response = shop.post(
        "/v1/events",
        content=orjson.dumps(purchase(member)),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["status"] == "applied"


def test_batch_mixes_good_and_bad_events_in_order(shop: httpx.Client, sync_redis: redis.Redis, service: Service) -> None:
    """A batch answers 200 with a result per event in order; bad ones rejected by path, good ones applied."""
    good = [unique("m") for _ in range(3)]
    bad_member = unique("m")
    events: list[Any] = [
        purchase(good[0], 19900),
        {"id": unique("e"), "member": good[1], "type": "checkin"},
        {"id": unique("e"), "member": bad_member, "type": "purchase", "data": {"amount": 10}, "colour": 1},
        {"id": unique("e"), "member": bad_member, "type": "purchase", "data": {"amount": "19900"}},
        purchase(good[2], 100),
        "not an event",
        {"id": unique("e"), "member": bad_member, "type": "review", "data": {"stars": 9}},
    ]
    response = shop.post("/v1/events", json={"events": events})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["applied", "applied", "rejected", "rejected", "applied", "rejected", "rejected"]
    assert [r["id"] for r in results] == [e["id"] if isinstance(e, dict) else None for e in events]
    assert results[2]["error"]["field"] == "events[2].colour"
    assert results[3]["error"]["field"] == "events[3].data.amount"
    assert results[5]["error"]["field"] == "events[5]"
    assert results[6]["error"]["field"] == "events[6].data.stars"
    assert all(r["error"]["code"].startswith("invalid") for r in results if r["status"] == "rejected")
    assert effects_of(results[0]) == FIRST_PURCHASE_EFFECTS
    assert ("xp", {"amount": 5, "total": 5, "reason": "checkin_xp"}) in effects_of(results[1])
    assert balance(shop, good[2]) == 1 + 100
    assert member_keys(sync_redis, service.prefix, bad_member) == []


def test_batch_same_id_twice_is_applied_then_duplicate(shop: httpx.Client, member: str) -> None:
    """The same event twice in one batch: the first applies, the second is a duplicate."""
    event = purchase(member)
    results = shop.post("/v1/events", json={"events": [event, event]}).json()["results"]
    assert [r["status"] for r in results] == ["applied", "duplicate"]
    assert balance(shop, member) == 299


def test_batch_conflict_names_the_event_id_path(shop: httpx.Client, member: str) -> None:
    """Within a batch, an id reused with another body is rejected as idempotency_conflict at events[i].id."""
    event = purchase(member, 19900)
    other = {**event, "data": {"amount": 500}}
    response = shop.post("/v1/events", json={"events": [event, purchase(member, 100), other]})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["applied", "applied", "rejected"]
    assert results[2]["error"] == {
        "code": "idempotency_conflict",
        "message": results[2]["error"]["message"],
        "field": "events[2].id",
    }
    assert balance(shop, member) == 299 + 1


def test_batch_of_1000_applies_every_event(shop: httpx.Client, sync_redis: redis.Redis, service: Service) -> None:
    """A full batch of 1000 invites for one member applies each once; the balance is their sum."""
    member = unique("m")
    events = [{"id": f"inv-{i}", "member": member, "type": "invite", "data": {"invitee": f"f-{i}"}} for i in range(1000)]
    results = shop.post("/v1/events", json={"events": events}).json()["results"]
    assert [r["status"] for r in results] == ["applied"] * 1000
    assert balance(shop, member) == 1000 * 300 + 500
    assert sync_redis.xlen(Keys(service.prefix).member(member).ledger) == 1001


def test_feed_ids_increase_across_effects(shop: httpx.Client, member: str) -> None:
    """Effect ids are stream ids in order, and a later event's effects come after an earlier one's."""
    first = shop.post("/v1/events", json=purchase(member)).json()["results"][0]["effects"]
    second = shop.post("/v1/events", json=purchase(member, 100)).json()["results"][0]["effects"]
    ids = [tuple(map(int, e["id"].split("-"))) for e in first + second]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


# --- exactly once under concurrency ---------------------------------------------------------------


async def _post_all(service: Service, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    async with service.async_client(connections=100) as client:
        return await asyncio.gather(*(client.post("/v1/events", json=b) for b in bodies))


def test_300_simultaneous_copies_apply_once(service: Service, shop: httpx.Client, sync_redis: redis.Redis) -> None:
    """300 simultaneous POSTs of one event: exactly one applied, 299 duplicates, points counted once."""
    member = unique("m")
    event = purchase(member, 19900)
    responses = asyncio.run(_post_all(service, [event] * 300))
    assert [r.status_code for r in responses] == [200] * 300
    statuses = [r.json()["results"][0]["status"] for r in responses]
    assert statuses.count("applied") == 1
    assert statuses.count("duplicate") == 299
    assert balance(shop, member) == 299
    mk = Keys(service.prefix).member(member)
    assert int(sync_redis.hget(mk.profile, "pts")) == 299
    assert int(sync_redis.hget(mk.profile, "xp")) == 299
    assert sync_redis.xlen(mk.ledger) == 2  # the purchase's points and first_order's


def test_300_simultaneous_distinct_events_all_count(service: Service, shop: httpx.Client, sync_redis: redis.Redis) -> None:
    """300 distinct invites for one member at once: all applied, balance is the exact sum."""
    member = unique("m")
    bodies = [{"id": f"inv-{i}", "member": member, "type": "invite", "data": {"invitee": f"f-{i}"}} for i in range(300)]
    responses = asyncio.run(_post_all(service, bodies))
    assert [r.status_code for r in responses] == [200] * 300
    assert [r.json()["results"][0]["status"] for r in responses] == ["applied"] * 300
    completed = [
        e for r in responses for e in r.json()["results"][0]["effects"] if e["type"] == "quest_completed"
    ]
    assert [e["data"]["quest"] for e in completed] == ["invite_friends"]
    assert balance(shop, member) == 300 * 300 + 500
    mk = Keys(service.prefix).member(member)
    assert sync_redis.xlen(mk.ledger) == 301
    assert int(sync_redis.hget(mk.profile, "xp")) == 500


def test_simultaneous_bodies_for_one_id_apply_one_and_refuse_the_other(
    service: Service, shop: httpx.Client, sync_redis: redis.Redis
) -> None:
    """200 simultaneous posts of one id with two bodies: one applies; same-body copies are duplicates, the rest 409."""
    member = unique("m")
    event_id = unique("order")
    small, large = purchase(member, 100, event_id=event_id), purchase(member, 19900, event_id=event_id)
    responses = asyncio.run(_post_all(service, [small, large] * 100))
    applied = [i for i, r in enumerate(responses) if r.status_code == 200 and r.json()["results"][0]["status"] == "applied"]
    assert len(applied) == 1
    winner = applied[0] % 2  # 0: the small body won, 1: the large one
    for i, r in enumerate(responses):
        if i == applied[0]:
            continue
        if i % 2 == winner:
            assert (r.status_code, r.json()["results"][0]["status"]) == (200, "duplicate")
        else:
            assert r.status_code == 409, r.text
            assert error_of(r)["code"] == "idempotency_conflict"
    assert balance(shop, member) == (1 + 100 if winner == 0 else 199 + 100)
