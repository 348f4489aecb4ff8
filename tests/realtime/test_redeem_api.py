"""Redeeming points for a catalog item over HTTP (``POST /v1/me/redeem``), against real service
processes: the answer, every refusal named, bad input named, and a process killed with SIGKILL
between the item's step and the member's, whose redemption the next process finishes once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from engine.crossing import EntryState, entry_record
from engine.keys import Keys
from engine.redemptions import CRASH_AFTER_RESERVE, catalog_keys
from tests.realtime.conftest import (
    API_KEY,
    EXAMPLE_CONFIG,
    Service,
    error_of,
    member_dump,
    new_prefix,
    purchase,
    start_service,
    unique,
)

ITEM = "tea-voucher-20"  # config/member_day.toml: 800 points, stock 500, two per member
COST = 800
DEADLINE_S = 30.0


def token_for(shop: httpx.Client, member: str) -> str:
    response = shop.post("/v1/tokens", json={"member": member})
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def redeem(service: Service, shop: httpx.Client, member: str, op_id: str | None = None, body: Any = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token_for(shop, member)}"}
    with httpx.Client(base_url=service.base_url, headers=headers, timeout=30) as client:
        return client.post("/v1/me/redeem", json=body if body is not None else {"id": op_id or unique("r"), "item": ITEM})


def with_points(shop: httpx.Client, member: str, amount_cents: int) -> int:
    """A purchase (1 point per ¥1, the first-order quest's 100, a tier's reward): the balance after."""
    assert shop.post("/v1/events", json=purchase(member, amount_cents)).status_code == 200
    return balance(shop, member)


def balance(shop: httpx.Client, member: str) -> int:
    return int(shop.get(f"/v1/members/{member}").json()["points"]["balance"])


def coupons(shop: httpx.Client, member: str, item: str = ITEM) -> list[dict[str, Any]]:
    return [r for r in shop.get(f"/v1/members/{member}").json()["rewards"] if r["item"] == item]


def sold(sync_redis: redis.Redis, prefix: str, item: str = ITEM) -> int:
    return int(sync_redis.hget(catalog_keys(Keys(prefix), item)[1], "sold") or 0)


def pending(sync_redis: redis.Redis, prefix: str, item: str = ITEM) -> int:
    """The item's entries still pending."""
    entries = sync_redis.hgetall(catalog_keys(Keys(prefix), item)[0])
    return sum(1 for v in entries.values() if entry_record(v)[0] is EntryState.PENDING)


def test_a_redemption_debits_grants_and_answers_the_coupon(
    service: Service, shop: httpx.Client, sync_redis: redis.Redis, member: str
) -> None:
    """200 applied with the points debit and the coupon granted; the snapshot shows both; the
    same id again is a duplicate replaying the effects and takes no more stock."""
    start = with_points(shop, member, 100_000)
    stock_before = sold(sync_redis, service.prefix)
    response = redeem(service, shop, member, "r-1")
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert (result["id"], result["member"], result["status"]) == ("r-1", member, "applied")
    [points, reward] = result["effects"]
    assert (points["type"], points["data"]) == ("points", {"amount": -COST, "balance": start - COST, "reason": f"redeem:{ITEM}"})
    assert reward["type"] == "reward"
    assert {k: reward["data"][k] for k in ("kind", "item", "coupon", "reason")} == {
        "kind": "coupon", "item": ITEM, "coupon": "r-1:c1", "reason": "redeem",
    }
    [coupon] = coupons(shop, member)
    assert (coupon["coupon"], coupon["state"], coupon["expires_at_ms"]) == ("r-1:c1", "granted", reward["data"]["expires_at_ms"])
    assert balance(shop, member) == start - COST
    assert sold(sync_redis, service.prefix) == stock_before + 1

    again = redeem(service, shop, member, "r-1")
    assert again.status_code == 200, again.text
    [duplicate] = again.json()["results"]
    assert (duplicate["status"], duplicate["effects"]) == ("duplicate", result["effects"])
    assert balance(shop, member) == start - COST and len(coupons(shop, member)) == 1
    assert sold(sync_redis, service.prefix) == stock_before + 1


def test_insufficient_points_is_409_and_writes_nothing(
    service: Service, shop: httpx.Client, sync_redis: redis.Redis, member: str
) -> None:
    """insufficient_points names the item; the member's keys are unchanged, no stock is held."""
    assert with_points(shop, member, 19_900) < COST
    stock_before = sold(sync_redis, service.prefix)
    before = member_dump(sync_redis, service.prefix, member)
    response = redeem(service, shop, member)
    assert response.status_code == 409, response.text
    assert error_of(response) == {
        "code": "insufficient_points",
        "message": "the member's live points balance cannot cover this",
        "field": "item",
    }
    assert member_dump(sync_redis, service.prefix, member) == before
    assert sold(sync_redis, service.prefix) == stock_before


def test_the_per_member_limit_is_409_limit_reached(service: Service, shop: httpx.Client, member: str) -> None:
    """Two per member: the third redemption is refused and debits nothing."""
    start = with_points(shop, member, 300_000)
    assert [redeem(service, shop, member).status_code for _ in range(2)] == [200, 200]
    third = redeem(service, shop, member)
    assert third.status_code == 409, third.text
    assert (error_of(third)["code"], error_of(third)["field"]) == ("limit_reached", "item")
    assert balance(shop, member) == start - 2 * COST


def test_an_id_used_by_another_operation_is_409_idempotency_conflict(service: Service, shop: httpx.Client, member: str) -> None:
    """The member's spend took the id: a redemption under it is a conflict naming the id."""
    start = with_points(shop, member, 100_000)
    assert shop.post(f"/v1/members/{member}/points/spend", json={"id": "op-1", "amount": 10}).status_code == 200
    response = redeem(service, shop, member, "op-1")
    assert response.status_code == 409, response.text
    assert (error_of(response)["code"], error_of(response)["field"]) == ("idempotency_conflict", "id")
    assert balance(shop, member) == start - 10


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"item": ITEM}, "id"),
        ({"id": "r{1}", "item": ITEM}, "id"),
        ({"id": "r-1"}, "item"),
        ({"id": "r-1", "item": ["x"]}, "item"),
        ({"id": "r-1", "item": "teapot"}, "item"),
        ({"id": "r-1", "item": "free-shipping"}, "item"),  # in the catalog, but has no points_cost
        ({"id": "r-1", "item": ITEM, "member": "m-2"}, "member"),
        ("r-1", "body"),
    ],
)
def test_bad_redemptions_are_422_naming_the_field(
    service: Service, shop: httpx.Client, sync_redis: redis.Redis, member: str, body: object, field: str
) -> None:
    """Every bad body is refused before Redis, naming the field; nothing is written anywhere."""
    with_points(shop, member, 100_000)
    stock_before = sold(sync_redis, service.prefix)
    before = member_dump(sync_redis, service.prefix, member)
    response = redeem(service, shop, member, body=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    assert member_dump(sync_redis, service.prefix, member) == before
    assert sold(sync_redis, service.prefix) == stock_before


def test_redeem_needs_a_member_token(service: Service, anonymous: httpx.Client) -> None:
    """No credentials, or the shop's API key in place of a member token: 401."""
    body = {"id": "r-1", "item": ITEM}
    for headers in ({}, {"authorization": f"Bearer {API_KEY}"}):
        response = anonymous.post("/v1/me/redeem", json=body, headers=headers)
        assert response.status_code == 401, response.text
        assert error_of(response)["code"] == "unauthorized"


# --- a programme of its own: one unit in stock ---------------------------------------------------------


def config_with(tmp: Path, **replacements: str) -> Path:
    text = EXAMPLE_CONFIG.read_text()
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp / "programme.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def one_left(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service whose redeemable item has a stock of one."""
    tmp = tmp_path_factory.mktemp("one-left")
    config = config_with(tmp, **{"stock = 500": "stock = 1"})
    svc = start_service(redis_url, new_prefix(), tmp / "serve", config=config)
    try:
        yield svc
    finally:
        svc.stop()


def test_out_of_stock_is_409_and_writes_nothing(one_left: Service, sync_redis: redis.Redis) -> None:
    """The one unit goes to the first member; the second is refused out_of_stock, untouched."""
    first, second = unique("m"), unique("m")
    with one_left.client() as shop:
        with_points(shop, first, 100_000)
        with_points(shop, second, 100_000)
        assert redeem(one_left, shop, first).status_code == 200
        before = member_dump(sync_redis, one_left.prefix, second)
        response = redeem(one_left, shop, second)
        assert response.status_code == 409, response.text
        assert error_of(response) == {"code": "out_of_stock", "message": "this item is out of stock", "field": "item"}
        assert member_dump(sync_redis, one_left.prefix, second) == before
        assert sold(sync_redis, one_left.prefix) == 1


# --- kill -9 between the slots ---------------------------------------------------------------------------


def crash_while_redeeming(redis_url: str, prefix: str, data_dir: Path, member: str, purchase_cents: int, op_id: str) -> int:
    """Start a service that SIGKILLs itself right after the item's step, give the member points,
    redeem: the connection drops, the process is gone, the reservation is left in the outbox.
    Returns the member's balance before the redemption."""
    # A grace of a second: the intent's job falls due soon after, for the next process to find.
    service = start_service(redis_url, prefix, data_dir, env={"REKINDLE_TEST_CRASH": CRASH_AFTER_RESERVE,
                                                             "REKINDLE_SWEEP_GRACE_S": "1"})
    try:
        with service.client() as shop:
            start = with_points(shop, member, purchase_cents)
            with pytest.raises(httpx.TransportError):
                redeem(service, shop, member, op_id)
        assert service.process.wait(timeout=DEADLINE_S) == -9
    finally:
        service.stop()
    return start


def restart_sweeping(redis_url: str, prefix: str, data_dir: Path) -> Service:
    """A service without the crash point whose scheduler (the seam's sweep) looks for due jobs often."""
    return start_service(redis_url, prefix, data_dir, env={"REKINDLE_SCHEDULER_S": "0.05"})


def await_outbox_empty(sync_redis: redis.Redis, prefix: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while pending(sync_redis, prefix):
        assert time.monotonic() < deadline, f"the sweep left the redemption pending after {DEADLINE_S} s"
        time.sleep(0.05)  # polling the store for the sweep, bounded by the deadline above


def test_a_redemption_killed_after_the_reservation_completes_once(redis_url: str, sync_redis: redis.Redis, tmp_path: Path) -> None:
    """SIGKILL right after the stock was taken: the next process's sweep debits the points once,
    grants the coupon once and keeps the unit taken once; the client's retry is a duplicate."""
    prefix, member = new_prefix(), unique("m")
    start = crash_while_redeeming(redis_url, prefix, tmp_path / "serve-1", member, 100_000, "r-1")
    assert (sold(sync_redis, prefix), pending(sync_redis, prefix)) == (1, 1)

    service = restart_sweeping(redis_url, prefix, tmp_path / "serve-2")
    try:
        await_outbox_empty(sync_redis, prefix)
        with service.client() as shop:
            assert balance(shop, member) == start - COST
            [coupon] = coupons(shop, member)
            assert coupon["coupon"] == "r-1:c1"
            retry = redeem(service, shop, member, "r-1")
            assert retry.status_code == 200, retry.text
            assert retry.json()["results"][0]["status"] == "duplicate"
            assert balance(shop, member) == start - COST and len(coupons(shop, member)) == 1
        assert (sold(sync_redis, prefix), pending(sync_redis, prefix)) == (1, 0)
    finally:
        service.stop()


def test_a_redemption_killed_after_the_reservation_that_cannot_pay_is_compensated(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """SIGKILL right after the stock was taken, for a member short of points: the sweep gives the
    unit back and writes nothing on the member; the client's retry is then insufficient_points."""
    prefix, member = new_prefix(), unique("m")
    start = crash_while_redeeming(redis_url, prefix, tmp_path / "serve-1", member, 19_900, "r-1")
    assert (sold(sync_redis, prefix), pending(sync_redis, prefix)) == (1, 1)
    before = member_dump(sync_redis, prefix, member)

    service = restart_sweeping(redis_url, prefix, tmp_path / "serve-2")
    try:
        await_outbox_empty(sync_redis, prefix)
        assert sold(sync_redis, prefix) == 0
        assert member_dump(sync_redis, prefix, member) == before
        with service.client() as shop:
            retry = redeem(service, shop, member, "r-1")
            assert retry.status_code == 409, retry.text
            assert error_of(retry)["code"] == "insufficient_points"
            assert balance(shop, member) == start < COST and coupons(shop, member) == []
        assert (sold(sync_redis, prefix), pending(sync_redis, prefix)) == (0, 0)
    finally:
        service.stop()
