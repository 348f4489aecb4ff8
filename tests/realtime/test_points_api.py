"""Spending points, using coupons and dry runs over HTTP, against a real service process."""

from __future__ import annotations

import time
from typing import Any

import httpx
import msgpack
import pytest
import redis

from engine.keys import Keys
from tests.realtime.conftest import Service, error_of, member_dump, purchase, unique

WAIT_S = 10.0  # the longest a pub/sub message is awaited: a safety net, not a timing


def balance(shop: httpx.Client, member: str) -> int:
    return int(shop.get(f"/v1/members/{member}").json()["points"]["balance"])


def spend(shop: httpx.Client, member: str, amount: int, op_id: str | None = None, **extra: Any) -> httpx.Response:
    return shop.post(f"/v1/members/{member}/points/spend", json={"id": op_id or unique("s"), "amount": amount, **extra})


def test_spend_applies_once_and_answers_the_new_balance(shop: httpx.Client, member: str) -> None:
    """A spend answers its points effect; the same id again is a duplicate replaying it."""
    shop.post("/v1/events", json=purchase(member))  # 299 points
    first = spend(shop, member, 120, "s-1", reason="checkout")
    assert first.status_code == 200, first.text
    [result] = first.json()["results"]
    assert result["status"] == "applied"
    assert [(e["type"], e["data"]) for e in result["effects"]] == [
        ("points", {"amount": -120, "balance": 179, "reason": "checkout"})
    ]
    [again] = spend(shop, member, 120, "s-1", reason="checkout").json()["results"]
    assert (again["status"], again["effects"]) == ("duplicate", result["effects"])
    assert balance(shop, member) == 179
    conflict = spend(shop, member, 121, "s-1", reason="checkout")
    assert conflict.status_code == 409
    assert error_of(conflict)["code"] == "idempotency_conflict"


def test_a_spend_beyond_the_balance_is_409_and_writes_nothing(
    shop: httpx.Client, sync_redis: redis.Redis, service: Service, member: str
) -> None:
    """insufficient_points names the amount; the member's keys are unchanged."""
    shop.post("/v1/events", json=purchase(member))
    before = member_dump(sync_redis, service.prefix, member)
    response = spend(shop, member, 300)
    assert response.status_code == 409, response.text
    assert error_of(response) == {
        "code": "insufficient_points",
        "message": "the member's live points balance cannot cover this",
        "field": "amount",
    }
    assert member_dump(sync_redis, service.prefix, member) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 5}, "id"),
        ({"id": "s-1"}, "amount"),
        ({"id": "s-1", "amount": -5}, "amount"),
        ({"id": "s-1", "amount": "5"}, "amount"),
        ({"id": "s-1", "amount": 5, "reason": "x" * 65}, "reason"),
        ({"id": "s-1", "amount": 5, "extra": 1}, "extra"),
        ([1], "body"),
    ],
)
def test_bad_spends_are_422_naming_the_field(
    shop: httpx.Client, sync_redis: redis.Redis, service: Service, member: str, body: object, field: str
) -> None:
    """Every bad spend body is refused before Redis, naming the field; nothing is written."""
    shop.post("/v1/events", json=purchase(member))
    before = member_dump(sync_redis, service.prefix, member)
    response = shop.post(f"/v1/members/{member}/points/spend", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    assert member_dump(sync_redis, service.prefix, member) == before


def test_a_coupon_is_used_exactly_once(shop: httpx.Client, member: str) -> None:
    """The first order's coupon: used once (200), then 409 already_used; the snapshot says used."""
    [award] = shop.post("/v1/events", json=purchase(member)).json()["results"]
    [coupon] = [e["data"]["coupon"] for e in award["effects"] if e["type"] == "reward"]
    url = f"/v1/members/{member}/coupons/{coupon}/use"
    first = shop.post(url, json={"id": "u-1", "order": "order-77"})
    assert first.status_code == 200, first.text
    second = shop.post(url, json={"id": "u-2", "order": "order-78"})
    assert second.status_code == 409
    assert error_of(second)["code"] == "already_used"
    [reward] = shop.get(f"/v1/members/{member}").json()["rewards"]
    assert (reward["coupon"], reward["state"], reward["order"]) == (coupon, "used", "order-77")


def test_an_unknown_coupon_is_404(shop: httpx.Client, member: str) -> None:
    """A coupon id the member does not hold answers 404 naming coupon."""
    response = shop.post(f"/v1/members/{member}/coupons/nope:c1/use", json={"id": "u-1", "order": "o-1"})
    assert response.status_code == 404
    assert error_of(response)["field"] == "coupon"


def test_a_dry_run_answers_what_applying_would_and_writes_nothing(
    shop: httpx.Client, sync_redis: redis.Redis, service: Service, member: str
) -> None:
    """?dry_run=1 answers exactly the effects a real post then has, without ids, and changes nothing."""
    shop.post("/v1/events", json=purchase(member, 5000))
    before = member_dump(sync_redis, service.prefix, member)
    event = purchase(member, 30_000)
    dry = shop.post("/v1/events?dry_run=1", json=event)
    assert dry.status_code == 200, dry.text
    [would] = dry.json()["results"]
    assert would["dry_run"] is True and would["status"] == "applied"
    assert member_dump(sync_redis, service.prefix, member) == before
    [real] = shop.post("/v1/events", json=event).json()["results"]
    # a coupon's validity runs from the moment it is granted: the two differ by the time between
    assert [timeless(e) for e in would["effects"]] == [timeless(e) for e in real["effects"]]
    [again] = shop.post("/v1/events?dry_run=1", json=event).json()["results"]
    assert again["status"] == "duplicate"


def next_message(pubsub: Any) -> dict[str, Any]:
    """The next message (or subscription confirmation) on a sharded subscription, awaited."""
    deadline = time.monotonic() + WAIT_S
    while (message := pubsub.get_sharded_message(timeout=0.5)) is None:
        assert time.monotonic() < deadline, f"nothing arrived within {WAIT_S} s"
    return message  # type: ignore[no-any-return]


def test_a_dry_run_publishes_nothing_on_the_members_live_channel(
    shop: httpx.Client, sync_redis: redis.Redis, service: Service, member: str
) -> None:
    """A subscriber of the member's channel hears nothing of a dry run: the first message after it is the real event's."""
    shop.post("/v1/events", json=purchase(member, 5000))
    with sync_redis.pubsub() as pubsub:
        pubsub.ssubscribe(Keys(service.prefix).member(member).channel)
        assert next_message(pubsub)["type"] == "ssubscribe"
        [would] = shop.post("/v1/events?dry_run=1", json=purchase(member, 30_000)).json()["results"]
        assert would["dry_run"] is True and would["status"] == "applied" and would["effects"]
        real = purchase(member, 100)
        [applied] = shop.post("/v1/events", json=real).json()["results"]
        assert applied["status"] == "applied"
        message = next_message(pubsub)  # what member.lua publishes: [feed entry id, operation id, effects]
        assert message["type"] == "smessage"
        assert msgpack.unpackb(message["data"], raw=False)[1] == real["id"]


def timeless(effect: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return effect["type"], {k: v for k, v in effect["data"].items() if k != "expires_at_ms"}


def test_a_dry_run_takes_one_event(shop: httpx.Client, member: str) -> None:
    """A batch with dry_run, or a dry_run value other than 1/true/0/false, is 422 on dry_run."""
    assert error_of(shop.post("/v1/events?dry_run=1", json={"events": [purchase(member)]}))["field"] == "dry_run"
    assert error_of(shop.post("/v1/events?dry_run=yes", json=purchase(member)))["field"] == "dry_run"
