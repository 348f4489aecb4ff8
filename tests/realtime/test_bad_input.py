"""Bad input of every kind: a 4xx that names the field, never a 500, and nothing written.

Each case first gives a member of its own some history, then sends the bad input naming that
member, and checks that every key of the member is byte for byte what it was (DUMP before and
after), and that a member named by a bad id has no keys at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest
import redis

from tests.realtime.conftest import Service, error_of, member_dump, member_keys, purchase, unique

DAY_S = 86_400


def _iso(delta_s: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=delta_s)).isoformat()


def _event(m: str, **changes: Any) -> dict[str, Any]:
    event = purchase(m)
    for key, value in changes.items():
        if value is _DROP:
            event.pop(key)
        else:
            event[key] = value
    return event


def _data(m: str, **data: Any) -> dict[str, Any]:
    return {"id": unique("e"), "member": m, "type": "purchase", "data": data}


_DROP = object()

Body = Callable[[str], Any]
# (case id, body for member m (bytes are sent as is), status, field, member the event names or None)
CASES: list[tuple[str, Body, int, str, Callable[[str], str] | None]] = [
    # the body itself
    ("bad_json", lambda m: b'{"id": "e-1", "member": "' + m.encode() + b'", ', 400, "body", None),
    ("trailing_garbage", lambda m: orjson.dumps(purchase(m)) + b"}", 400, "body", None),
    ("empty_body", lambda m: b"", 400, "body", None),
    ("not_utf8", lambda m: b'{"id": "\xff\xfe"}', 400, "body", None),
    ("json_array", lambda m: orjson.dumps([purchase(m)]), 422, "body", None),
    ("json_number", lambda m: b"42", 422, "body", None),
    ("json_string", lambda m: b'"purchase"', 422, "body", None),
    ("json_null", lambda m: b"null", 422, "body", None),
    ("nan", lambda m: b"NaN", 400, "body", None),
    # batches
    ("events_not_array", lambda m: {"events": purchase(m)}, 422, "events", None),
    ("events_null", lambda m: {"events": None}, 422, "events", None),
    ("events_empty", lambda m: {"events": []}, 422, "events", None),
    ("events_1001", lambda m: {"events": [purchase(m, 100) for _ in range(1001)]}, 422, "events", None),
    ("batch_unknown_key", lambda m: {"events": [purchase(m)], "dry_run": True}, 422, "dry_run", None),
    # top-level keys of an event
    ("unknown_key", lambda m: _event(m, colour="red"), 422, "colour", None),
    ("unknown_type", lambda m: _event(m, type="purchased"), 422, "type", None),
    ("type_not_string", lambda m: _event(m, type=["purchase"]), 422, "type", None),
    ("missing_id", lambda m: _event(m, id=_DROP), 422, "id", None),
    ("missing_member", lambda m: _event(m, member=_DROP), 422, "member", None),
    ("missing_type", lambda m: _event(m, type=_DROP), 422, "type", None),
    # data fields
    ("amount_string", lambda m: _data(m, amount="19900"), 422, "data.amount", None),
    ("amount_float", lambda m: _data(m, amount=199.5), 422, "data.amount", None),
    ("amount_bool", lambda m: _data(m, amount=True), 422, "data.amount", None),
    ("amount_null", lambda m: _data(m, amount=None), 422, "data.amount", None),
    ("amount_negative", lambda m: _data(m, amount=-100), 422, "data.amount", None),
    ("amount_zero", lambda m: _data(m, amount=0), 422, "data.amount", None),
    ("amount_over_max", lambda m: _data(m, amount=100_000_001), 422, "data.amount", None),
    ("amount_huge", lambda m: b'{"id":"e-1","member":"' + m.encode() + b'","type":"purchase","data":{"amount":1180591620717411303424}}', 422, "data.amount", None),
    ("amount_missing", lambda m: _data(m, sku="tea-01"), 422, "data.amount", None),
    ("unknown_data_field", lambda m: _data(m, amount=100, colour="red"), 422, "data.colour", None),
    ("sku_too_long", lambda m: _data(m, amount=100, sku="x" * 65), 422, "data.sku", None),
    ("channel_not_allowed", lambda m: _data(m, amount=100, channel="phone"), 422, "data.channel", None),
    ("data_array", lambda m: _event(m, data=[19900]), 422, "data", None),
    ("data_string", lambda m: _event(m, data="amount=19900"), 422, "data", None),
    ("data_null", lambda m: _event(m, data=None), 422, "data", None),
    ("stars_too_many", lambda m: {"id": "r-1", "member": m, "type": "review", "data": {"stars": 6}}, 422, "data.stars", None),
    ("has_photo_string", lambda m: {"id": "r-1", "member": m, "type": "review", "data": {"stars": 5, "has_photo": "yes"}}, 422, "data.has_photo", None),
    ("checkin_with_data", lambda m: {"id": "c-1", "member": m, "type": "checkin", "data": {"amount": 1}}, 422, "data.amount", None),
    # event ids
    ("id_braces", lambda m: _event(m, id="order{1}"), 422, "id", None),
    ("id_space", lambda m: _event(m, id="order 1"), 422, "id", None),
    ("id_129_chars", lambda m: _event(m, id="e" * 129), 422, "id", None),
    ("id_unicode", lambda m: _event(m, id="订单-1"), 422, "id", None),
    ("id_empty", lambda m: _event(m, id=""), 422, "id", None),
    ("id_newline", lambda m: _event(m, id="order-1\n"), 422, "id", None),
    ("id_number", lambda m: _event(m, id=42), 422, "id", None),
    # member ids: the bad id is what the store would have keyed on
    ("member_braces", lambda m: _event(m, member=f"{m}{{1}}"), 422, "member", lambda m: f"{m}{{1}}"),
    ("member_space", lambda m: _event(m, member=f"{m} x"), 422, "member", lambda m: f"{m} x"),
    ("member_65_chars", lambda m: _event(m, member=m + "x" * (65 - len(m))), 422, "member", lambda m: m + "x" * (65 - len(m))),
    ("member_unicode", lambda m: _event(m, member=f"{m}é"), 422, "member", lambda m: f"{m}é"),
    ("member_empty", lambda m: _event(m, member=""), 422, "member", lambda m: ""),
    ("member_leading_dash", lambda m: _event(m, member=f"-{m}"), 422, "member", lambda m: f"-{m}"),
    ("member_star", lambda m: _event(m, member=f"{m}*"), 422, "member", lambda m: f"{m}*"),
    # event time
    ("at_too_old", lambda m: _event(m, at=_iso(-15 * DAY_S)), 422, "at", None),
    ("at_too_old_epoch_ms", lambda m: _event(m, at=int((datetime.now(timezone.utc).timestamp() - 15 * DAY_S) * 1000)), 422, "at", None),
    ("at_future", lambda m: _event(m, at=_iso(3600)), 422, "at", None),
    ("at_far_future", lambda m: _event(m, at="9999-12-31T23:59:59+00:00"), 422, "at", None),
    ("at_naive", lambda m: _event(m, at=datetime.now().isoformat()), 422, "at", None),
    ("at_date_only", lambda m: _event(m, at=datetime.now().date().isoformat()), 422, "at", None),
    ("at_garbage", lambda m: _event(m, at="yesterday"), 422, "at", None),
    ("at_float", lambda m: _event(m, at=1.5e12), 422, "at", None),
    ("at_bool", lambda m: _event(m, at=True), 422, "at", None),
    ("at_negative", lambda m: _event(m, at=-1), 422, "at", None),
    ("at_beyond_2_53", lambda m: _event(m, at=2**63), 422, "at", None),
    ("at_object", lambda m: _event(m, at={"ms": 1}), 422, "at", None),
    ("at_year_1", lambda m: _event(m, at="0001-01-01T00:00:00+14:00"), 422, "at", None),
]


@pytest.mark.parametrize(("body", "status", "field", "stored_as"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_event_is_refused_by_field_and_writes_nothing(
    shop: httpx.Client,
    sync_redis: redis.Redis,
    service: Service,
    body: Body,
    status: int,
    field: str,
    stored_as: Callable[[str], str] | None,
) -> None:
    """A malformed or invalid event answers its 4xx naming the field, and changes nothing stored."""
    m = unique("m")
    assert shop.post("/v1/events", json=purchase(m)).status_code == 200
    before = member_dump(sync_redis, service.prefix, m)
    assert before
    raw = body(m)
    content = raw if isinstance(raw, bytes) else orjson.dumps(raw)
    response = shop.post("/v1/events", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error.get("field") == field, error
    assert error["message"]
    assert member_dump(sync_redis, service.prefix, m) == before
    if stored_as:
        assert member_keys(sync_redis, service.prefix, stored_as(m)) == []



def test_body_over_the_limit_is_413(shop: httpx.Client, sync_redis: redis.Redis, service: Service) -> None:
    """A 3 MiB body (limit 2 MiB) answers 413 on field body and stores nothing."""
    m = unique("m")
    event = purchase(m)
    padding = "x" * (3 * 1024 * 1024)
    content = orjson.dumps({"events": [event, {**purchase(m), "data": {"amount": 1, "sku": padding}}]})
    assert len(content) > 3 * 1024 * 1024
    response = shop.post("/v1/events", content=content)
    assert response.status_code == 413, response.text
    assert error_of(response)["field"] == "body"
    assert member_keys(sync_redis, service.prefix, m) == []


def test_chunked_body_over_the_limit_is_413(shop: httpx.Client, sync_redis: redis.Redis, service: Service) -> None:
    """A body over the limit without Content-Length is cut off while streaming: 413, nothing stored."""
    m = unique("m")
    head = orjson.dumps(purchase(m))[:-1] + b', "pad": "'

    def chunks():  # type: ignore[no-untyped-def]
        yield head
        for _ in range(48):
            yield b"x" * 65536
        yield b'"}'

    response = shop.post("/v1/events", content=chunks())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert error_of(response)["field"] == "body"
    assert member_keys(sync_redis, service.prefix, m) == []


def test_unknown_route_is_404_json(shop: httpx.Client) -> None:
    """An unknown path answers 404 with a JSON error body."""
    response = shop.get("/v1/nope")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_wrong_method_is_405_json(shop: httpx.Client) -> None:
    """A known path with the wrong method answers 405 with a JSON error body."""
    response = shop.delete("/v1/events")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert "POST" in response.headers.get("allow", "")


@pytest.mark.parametrize(
    "path",
    ["/v1/members/m%7B1%7D", "/v1/members/m%201", "/v1/members/" + "m" * 65, "/v1/members/m%C3%A9"],
    ids=["braces", "space", "65_chars", "unicode"],
)
def test_bad_member_id_in_path_is_422(shop: httpx.Client, path: str) -> None:
    """A member id in the path outside the safe alphabet answers 422 on field member."""
    response = shop.get(path)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == "member"


HUGE = b"100000000000000000000000"  # 10**23: past 64 bits, so orjson reads it as the float 1e+23


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        ("/v1/members/{m}/points/spend", b'{"id": "s-1", "amount": %s}', "amount", "is above the maximum, 1,000,000,000"),
        ("/v1/events", b'{"id": "e-1", "member": "{m}", "type": "purchase", "data": {"amount": %s}}',
         "data.amount", "is above the maximum, 100000000"),
        ("/v1/events", b'{"id": "e-1", "member": "{m}", "type": "purchase", "at": %s}', "at",
         "is above the maximum, 9007199254740991 (epoch milliseconds)"),
        ("/v1/tokens", b'{"member": "{m}", "ttl_s": %s}', "ttl_s", "is above the maximum, 2592000 s"),
    ],
    ids=["spend_amount", "event_data", "event_at", "token_ttl"],
)
def test_a_huge_integer_is_above_the_maximum(
    shop: httpx.Client, sync_redis: redis.Redis, service: Service, path: str, body: bytes, field: str, message: str
) -> None:
    """An integer too large for 64 bits is an integer above the field's maximum (422 saying so), not "not an integer"."""
    m = unique("m")
    assert shop.post("/v1/events", json=purchase(m)).status_code == 200
    before = member_dump(sync_redis, service.prefix, m)
    content = (body % HUGE).replace(b"{m}", m.encode())
    response = shop.post(path.format(m=m), content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert (error_of(response)["field"], error_of(response)["message"]) == (field, message)
    assert member_dump(sync_redis, service.prefix, m) == before
