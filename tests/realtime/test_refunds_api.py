"""Refunds over HTTP: an event of the example programme's `refund` type (it `reverses` purchase)
answers negative effects; one that cannot apply is a 422 naming why and the field, writing
nothing; in a batch it is that event's rejection alone."""

from __future__ import annotations

from typing import Any

import httpx
import redis

from tests.realtime.conftest import Service, error_of, member_dump, purchase, unique


def refund(member: str, of: str, amount: int | None = None, event_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"of": of} | ({} if amount is None else {"amount": amount})
    return {"id": event_id or unique("refund"), "member": member, "type": "refund", "data": data}


def effects_of(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    [result] = response.json()["results"]
    return [(e["type"], e["data"]) for e in result["effects"]]


def totals(response: httpx.Response, rules_only: bool = False) -> dict[str, int]:
    """XP and points granted (or taken) by one operation: by its rules alone, or in all."""
    out = {"xp": 0, "points": 0}
    for kind, data in effects_of(response):
        if kind in out and not (rules_only and data["reason"].startswith(("quest:", "tier:"))):
            out[kind] += data["amount"]
    return out


def test_a_partial_then_a_full_refund_take_back_what_the_purchase_earned(shop: httpx.Client, member: str) -> None:
    order = purchase(member, 10_000)
    posted = shop.post("/v1/events", json=order)
    earned, by_rules = totals(posted), totals(posted, rules_only=True)
    tiers = [d for t, d in effects_of(posted) if t == "tier_up"]
    assert tiers == []  # a tier's rewards are kept: this order reaches none
    snapshot = shop.get(f"/v1/members/{member}").json()
    balance, xp = snapshot["points"]["balance"], snapshot["xp"]

    partial = shop.post("/v1/events", json=refund(member, order["id"], 2_500))
    assert partial.status_code == 200, partial.text
    # A share of what the rules granted; a quest the order completed is reopened by a full refund only.
    assert totals(partial) == {"xp": -(by_rules["xp"] // 4), "points": -(by_rules["points"] // 4)}

    rest = shop.post("/v1/events", json=refund(member, order["id"]))
    assert rest.status_code == 200, rest.text
    after = shop.get(f"/v1/members/{member}").json()
    assert after["points"]["balance"] == balance - earned["points"]
    assert after["xp"] == xp - earned["xp"]

    again = shop.post("/v1/events", json=refund(member, order["id"]))
    assert again.status_code == 422, again.text
    assert error_of(again) == {
        "code": "already_refunded",
        "message": "the original event was already refunded in full",
        "field": "data.of",
    }


def test_a_refund_of_an_unknown_order_is_422_and_writes_nothing(
    shop: httpx.Client, sync_redis: redis.Redis, service: Service, member: str
) -> None:
    shop.post("/v1/events", json=purchase(member))
    before = member_dump(sync_redis, service.prefix, member)
    response = shop.post("/v1/events", json=refund(member, "no-such-order"))
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "unknown_original"
    assert error_of(response)["field"] == "data.of"
    too_much = shop.post("/v1/events", json=refund(member, "no-such-order", 10))
    assert error_of(too_much)["code"] == "unknown_original"
    assert member_dump(sync_redis, service.prefix, member) == before


def test_in_a_batch_a_refused_refund_is_its_own_rejection(shop: httpx.Client, member: str) -> None:
    order = purchase(member, 10_000)
    response = shop.post(
        "/v1/events",
        json={"events": [order, refund(member, order["id"], 20_000), refund(member, order["id"], 5_000)]},
    )
    assert response.status_code == 200, response.text
    applied, too_much, half = response.json()["results"]
    assert applied["status"] == "applied" and half["status"] == "applied"
    assert too_much["status"] == "rejected"
    assert too_much["error"]["code"] == "amount_exceeds_original"
    assert too_much["error"]["field"] == "events[1].data.amount"


def test_refund_input_is_checked_before_the_store(shop: httpx.Client, member: str) -> None:
    no_of = shop.post("/v1/events", json={"id": unique("r"), "member": member, "type": "refund", "data": {}})
    assert no_of.status_code == 422 and error_of(no_of)["field"] == "data.of"
    zero = shop.post("/v1/events", json=refund(member, "o-1", 0))
    assert zero.status_code == 422 and error_of(zero)["field"] == "data.amount"


def test_a_dry_run_of_a_refund_answers_its_effects_and_writes_nothing(shop: httpx.Client, member: str) -> None:
    order = purchase(member, 10_000)
    shop.post("/v1/events", json=order)
    before = shop.get(f"/v1/members/{member}").json()
    dry = shop.post("/v1/events?dry_run=1", json=refund(member, order["id"]))
    assert dry.status_code == 200, dry.text
    assert ("points", {"amount": -before["points"]["balance"], "balance": 0, "reason": "refund"}) in effects_of(dry)
    assert shop.get(f"/v1/members/{member}").json()["points"] == before["points"]


def test_an_order_with_the_longest_id_can_be_refunded(shop: httpx.Client, member: str) -> None:
    """Any id a purchase may have (128 characters) is one a refund's `of` accepts: the example
    programme's refund takes back an order whose id is as long as ids go."""
    order = purchase(member, 10_000, event_id="o" * 128)
    assert shop.post("/v1/events", json=order).status_code == 200
    response = shop.post("/v1/events", json=refund(member, order["id"]))
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["applied"]
