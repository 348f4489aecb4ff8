"""The dev clock over HTTP: ``rekindle serve --dev-clock`` and ``POST /v1/admin/clock``, against
real service processes; points expire from the scheduler when the clock passes their expiry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import jwt
import msgpack
import pytest
import redis

from tests.realtime.conftest import (
    ADMIN_KEY,
    API_KEY,
    TOKEN_SECRET,
    Service,
    error_of,
    free_port,
    new_prefix,
    purchase,
    run_cli,
    start_service,
    unique,
)

SHANGHAI = timezone(timedelta(hours=8))


def start_dev_service(redis_url: str, data_dir: Path) -> Service:
    """``rekindle serve --dev-clock``, ready to answer."""
    return start_service(redis_url, new_prefix(), data_dir, args=("--dev-clock",))


@pytest.fixture(scope="module")
def dev(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service on the dev clock for this module (its clock only moves forward)."""
    svc = start_dev_service(redis_url, tmp_path_factory.mktemp("dev-clock"))
    try:
        yield svc
    finally:
        svc.stop()


def iso(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)).astimezone(SHANGHAI).isoformat(timespec="milliseconds")


def feed_effects(sync_redis: redis.Redis, prefix: str, member: str) -> list[tuple[str, dict[str, Any]]]:
    entries = sync_redis.xrange(f"{prefix}:{{m:{member}}}:f")
    return [(kind, data) for _, f in entries for kind, data in msgpack.unpackb(f[b"d"], raw=False)]


def test_moving_the_clock_past_an_expiry_expires_the_points(dev: Service, sync_redis: redis.Redis) -> None:
    """A purchase's points (end of next year), the clock set past their expiry: the answer says one
    job ran, and the stored balance, ledger (kind x) and feed (points_expired) show the expiry."""
    shop, admin = dev.client(API_KEY), dev.client(ADMIN_KEY)
    member = unique("m")
    assert shop.post("/v1/events", json=purchase(member)).status_code == 200
    points = shop.get(f"/v1/members/{member}").json()["points"]
    [lot] = points["expiring"]
    assert points["balance"] == lot["amount"] > 0
    expiry = lot["expires_at_ms"]

    moved = admin.post("/v1/admin/clock", json={"now": iso(expiry + 86_400_000)})
    assert moved.status_code == 200, moved.text
    # Three jobs fell due: the lot's expiry, its notice a week before ([care.points_expiring]) and
    # the member's dormancy ([care.dormancy]: 60 days without activity).
    assert moved.json() == {"now": iso(expiry + 86_400_000), "now_ms": expiry + 86_400_000, "jobs_run": 3}

    after = shop.get(f"/v1/members/{member}").json()["points"]
    assert (after["balance"], after["expiring"]) == (0, [])
    tag = f"{dev.prefix}:{{m:{member}}}"
    assert sync_redis.hget(f"{tag}:p", "pts") == b"0"  # written by the job, not only hidden by the view
    ledger = sync_redis.xrange(f"{tag}:l")
    assert {f[b"k"] for _, f in ledger[:-1]} == {b"g"}  # the purchase's grants (rules, quest)
    assert (ledger[-1][1][b"k"], int(ledger[-1][1][b"d"]), ledger[-1][1][b"b"]) == (b"x", -lot["amount"], b"0")
    expired = {"amount": lot["amount"], "balance": 0, "expired_at_ms": expiry}
    assert ("points_expired", expired) in feed_effects(sync_redis, dev.prefix, member)

    again = admin.post("/v1/admin/clock", json={"now": iso(expiry + 2 * 86_400_000)})
    assert again.json()["jobs_run"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "now"),
        ({"now": 1_900_000_000_000}, "now"),
        ({"now": "next tuesday"}, "now"),
        ({"now": "2031-01-01T00:00:00"}, "now"),  # no offset: a wall time of no known zone
        ({"now": "2000-01-01T00:00:00+08:00"}, "now"),  # backwards
        ({"now": "0001-01-01T00:00:00+14:00"}, "now"),  # backwards, as far as ISO 8601 goes
        ({"now": "9999-12-31T23:59:59.999999-23:59"}, "now"),  # past the latest clock, as far as it goes
        ({"now": "2031-01-01T00:00:00Z", "jobs": 1}, "jobs"),
        (["2031-01-01T00:00:00Z"], "body"),
    ],
)
def test_bad_clock_bodies_are_422_naming_the_field(dev: Service, body: object, field: str) -> None:
    """Every bad body is refused before anything moves, naming the field."""
    response = dev.client(ADMIN_KEY).post("/v1/admin/clock", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field


@pytest.mark.parametrize("key", [None, API_KEY, "not-a-key"])
def test_the_clock_takes_the_admin_key(dev: Service, key: str | None) -> None:
    """No key, the shop's key or a made-up one: 401, and the clock does not move."""
    response = dev.client(key).post("/v1/admin/clock", json={"now": "2031-01-01T00:00:00Z"})
    assert response.status_code == 401, response.text
    assert error_of(response)["code"] == "unauthorized"


def test_without_the_flag_the_route_does_not_exist(admin: httpx.Client) -> None:
    """The session's service (no --dev-clock) answers 404 exactly as for any unknown path."""
    response = admin.post("/v1/admin/clock", json={"now": "2031-01-01T00:00:00Z"})
    assert response.status_code == 404
    unknown = admin.post("/v1/admin/no-such-route", json={})
    assert response.json() == unknown.json()


@pytest.mark.parametrize(("flag", "env"), [(["--dev-clock"], {}), ([], {"REKINDLE_DEV_CLOCK": "1"})])
def test_the_dev_clock_refuses_several_workers(cli_env: dict[str, str], flag: list[str], env: dict[str, str]) -> None:
    """The clock's offset lives in one process: with --workers 2 serve exits 2 and says why."""
    result = run_cli("serve", *flag, "--workers", "2", "--port", str(free_port()), env={**cli_env, **env})
    assert result.returncode == 2
    assert "--dev-clock" in result.stderr and "--workers" in result.stderr


def test_a_bad_dev_clock_setting_is_refused(cli_env: dict[str, str]) -> None:
    """REKINDLE_DEV_CLOCK must be 1 or 0: anything else stops serve with exit 2, naming it."""
    result = run_cli("serve", "--port", str(free_port()), env={**cli_env, "REKINDLE_DEV_CLOCK": "maybe"})
    assert result.returncode == 2
    assert "REKINDLE_DEV_CLOCK" in result.stderr


def test_the_clock_goes_no_later_than_every_date_supports(redis_url: str, tmp_path: Path) -> None:
    """Past 2999-12-31T23:59:59.999Z the clock is refused (422 naming the limit, the clock unmoved);
    at that limit a purchase is awarded and its points get an expiry (no 500 from the calendar)."""
    svc = start_dev_service(redis_url, tmp_path)
    try:
        admin, shop = svc.client(ADMIN_KEY), svc.client(API_KEY)
        for late in ("9998-06-01T00:00:00+08:00", "3000-01-01T00:00:00Z", "2999-12-31T23:59:59.999-00:01"):
            refused = admin.post("/v1/admin/clock", json={"now": late})
            assert refused.status_code == 422, refused.text
            assert (error_of(refused)["field"], "2999-12-31T23:59:59.999Z" in error_of(refused)["message"]) == ("now", True)
        assert admin.get("/v1/admin/clock").json()["now_ms"] < 2_000_000_000_000  # not moved
        latest = admin.post("/v1/admin/clock", json={"now": "2999-12-31T23:59:59.999Z"})
        assert latest.status_code == 200, latest.text
        member = unique("m")
        awarded = shop.post("/v1/events", json=purchase(member))
        assert awarded.status_code == 200, awarded.text
        [lot] = shop.get(f"/v1/members/{member}").json()["points"]["expiring"]
        assert lot["expires_at_ms"] > latest.json()["now_ms"]
    finally:
        svc.stop()


def test_get_reads_the_clock_as_post_answers_it(dev: Service) -> None:
    """GET /v1/admin/clock answers the clock now (UTC, no job run); after a move it reads the moved clock."""
    admin = dev.client(ADMIN_KEY)
    before = admin.get("/v1/admin/clock")
    assert before.status_code == 200, before.text
    body = before.json()
    assert set(body) == {"now", "now_ms", "jobs_run"} and body["jobs_run"] == 0
    assert datetime.fromisoformat(body["now"]) == datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=body["now_ms"])
    target = body["now_ms"] + 400 * 86_400_000
    assert admin.post("/v1/admin/clock", json={"now": iso(target)}).status_code == 200
    after = admin.get("/v1/admin/clock").json()
    assert target <= after["now_ms"] < target + 60_000


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_clock_routes_take_the_admin_key_and_say_so(dev: Service, method: str) -> None:
    """The shop's key on either clock route: 401 saying the route takes an admin key."""
    response = dev.client(API_KEY).request(method, "/v1/admin/clock", json={"now": "2031-01-01T00:00:00Z"} if method == "POST" else None)
    assert response.status_code == 401, response.text
    assert error_of(response)["message"] == "this route takes an admin key, not a shop API key"


def test_without_the_flag_get_does_not_exist_either(admin: httpx.Client) -> None:
    """The session's service (no --dev-clock) answers GET /v1/admin/clock 404 exactly as an unknown path."""
    response = admin.get("/v1/admin/clock")
    assert response.status_code == 404
    assert response.json() == admin.get("/v1/admin/no-such-route").json()


def test_member_tokens_are_checked_against_the_dev_clock(dev: Service) -> None:
    """A token minted after the dev clock moved a year on redeems and reads /v1/me; one minted by the
    wall clock has expired by the dev clock (401 saying so)."""
    admin, shop = dev.client(ADMIN_KEY), dev.client(API_KEY)
    now_ms = admin.get("/v1/admin/clock").json()["now_ms"]
    assert admin.post("/v1/admin/clock", json={"now": iso(now_ms + 365 * 86_400_000)}).status_code == 200
    member = unique("m")
    assert shop.post("/v1/events", json=purchase(member, amount=100_000)).status_code == 200
    minted = shop.post("/v1/tokens", json={"member": member, "ttl_s": 600})
    assert minted.status_code == 200, minted.text
    as_member = dev.client(minted.json()["token"])
    assert as_member.get("/v1/me").status_code == 200
    redeemed = as_member.post("/v1/me/redeem", json={"id": unique("r"), "item": "tea-voucher-20"})
    assert redeemed.status_code == 200, redeemed.text

    wall_s = int(time.time())
    walled = jwt.encode({"sub": member, "iat": wall_s, "exp": wall_s + 600}, TOKEN_SECRET, algorithm="HS256")
    refused = dev.client(walled).get("/v1/me")
    assert refused.status_code == 401, refused.text
    assert error_of(refused)["message"] == "member token has expired"
