"""Event validation: every bad input is refused before Redis, naming the field that is wrong."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import CompiledProgram
from engine.errors import EventOutOfWindow, InvalidEvent
from engine.events import parse_event, parse_time

NOW_MS = 1_794_362_403_000  # 2026-11-11T10:00:03+08:00
DAY_MS = 86_400_000
RETENTION_MS = 14 * DAY_MS  # the example's dedupe_retention_days
SKEW_MS = 300_000  # the example's max_clock_skew_s


def purchase(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "order-9912-paid",
        "member": "m-42",
        "type": "purchase",
        "data": {"amount": 19900, "sku": "tea-01"},
    }
    body.update(overrides)
    return body


def with_data(type_: str = "purchase", **data: Any) -> dict[str, Any]:
    base = {"purchase": {"amount": 19900}, "review": {"stars": 5}, "invite": {"invitee": "m-7"}}.get(type_, {})
    return purchase(type=type_, data={**base, **data})


def refused(program: CompiledProgram, raw: object, now_ms: int = NOW_MS, window_ms: int | None = None) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw, program, now_ms, window_ms)
    assert info.value.message
    return info.value


def test_a_valid_event_parses(program: CompiledProgram) -> None:
    """A well-formed purchase parses with its ids, type, data and the default `at` of now."""
    event = parse_event(purchase(), program, NOW_MS)
    assert (event.id, event.member, event.type, event.at_ms) == ("order-9912-paid", "m-42", "purchase", NOW_MS)
    assert event.data == {"amount": 19900, "sku": "tea-01"}
    assert len(event.fingerprint) == 6


def test_data_may_be_omitted_when_no_field_is_required(program: CompiledProgram) -> None:
    """A check-in needs no data at all."""
    event = parse_event({"id": "c1", "member": "m-1", "type": "checkin"}, program, NOW_MS)
    assert event.data == {}


@pytest.mark.parametrize("raw", [None, [], "event", 42, True])
def test_event_must_be_an_object(program: CompiledProgram, raw: object) -> None:
    """An event that is not a JSON object is refused as a whole (no field to name)."""
    error = refused(program, raw)
    assert error.field is None
    assert "JSON object" in error.message


def test_unknown_top_level_key(program: CompiledProgram) -> None:
    """A key beside id/member/type/at/data is refused by name."""
    assert refused(program, purchase(amount=19900)).field == "amount"
    assert refused(program, purchase(zz=1, aa=2)).field == "aa"


@pytest.mark.parametrize("key", ["id", "member", "type"])
def test_missing_required_key(program: CompiledProgram, key: str) -> None:
    """id, member and type are required, each named when missing."""
    raw = purchase()
    del raw[key]
    error = refused(program, raw)
    assert (error.field, error.message) == (key, "is required")


@pytest.mark.parametrize("key", ["id", "member"])
@pytest.mark.parametrize(
    "value",
    [
        "m{42}",  # braces steer hash slots
        "{m:1}",
        "has space",
        "",
        None,
        42,
        ["m-1"],
        "mé",  # non-ASCII
        "会员",
        "-leading-dash",
        "tab\there",
        "new\nline",
    ],
)
def test_bad_ids_are_refused(program: CompiledProgram, key: str, value: object) -> None:
    """Ids that would reach a key must be non-empty strings of the safe alphabet."""
    assert refused(program, purchase(**{key: value})).field == key


def test_id_length_limits(program: CompiledProgram) -> None:
    """An event id may be 128 characters, not 129; a member id 64, not 65."""
    assert parse_event(purchase(id="e" * 128), program, NOW_MS).id == "e" * 128
    assert refused(program, purchase(id="e" * 129)).field == "id"
    assert parse_event(purchase(member="m" * 64), program, NOW_MS).member == "m" * 64
    assert refused(program, purchase(member="m" * 65)).field == "member"


def test_safe_punctuation_is_allowed(program: CompiledProgram) -> None:
    """Ids may hold . _ : @ - after their first character."""
    event = parse_event(purchase(id="order.9912_paid:2@shop-1", member="m_4.2:x@y-z"), program, NOW_MS)
    assert (event.id, event.member) == ("order.9912_paid:2@shop-1", "m_4.2:x@y-z")


@pytest.mark.parametrize("value", ["purchased", "", None, 1, ["purchase"], "Purchase"])
def test_unknown_type(program: CompiledProgram, value: object) -> None:
    """Only types declared in the programme are accepted."""
    error = refused(program, purchase(type=value))
    assert error.field == "type"
    assert "checkin, invite, login, purchase, refund, review, share" in error.message


@pytest.mark.parametrize("data", [[], "amount=1", 5, None, True])
def test_data_must_be_an_object(program: CompiledProgram, data: object) -> None:
    """data, when given, is an object."""
    assert refused(program, purchase(data=data)).field == "data"


@pytest.mark.parametrize(
    ("raw", "field", "message_part"),
    [
        (with_data(colour="red"), "data.colour", "unknown field"),
        (with_data("checkin", amount=1), "data.amount", "declared: none"),
        (purchase(data={"sku": "tea-01"}), "data.amount", "is required"),
        (purchase(type="review", data={"has_photo": True}), "data.stars", "is required"),
        (with_data(amount="19900"), "data.amount", "must be an integer, not str"),
        (with_data(amount=199.5), "data.amount", "must be an integer, not float"),  # 199.0 is 199
        (with_data(amount=True), "data.amount", "must be an integer, not a boolean"),
        (with_data(amount=None), "data.amount", "must be an integer, not null"),
        (with_data(amount=0), "data.amount", "must be at least 1"),
        (with_data(amount=-19900), "data.amount", "must be at least 1"),
        (with_data(amount=100_000_001), "data.amount", "is above the maximum, 100000000"),
        (with_data(amount=1e23), "data.amount", "is above the maximum, 100000000"),  # JSON's 10**23, as orjson parses it
        (with_data(amount=-1e23), "data.amount", "must be at least 1"),
        (with_data("review", stars=6), "data.stars", "is above the maximum, 5"),
        (with_data("review", stars=0), "data.stars", "must be at least 1"),
        (with_data("review", has_photo=1), "data.has_photo", "must be true or false, not int"),
        (with_data("review", has_photo="true"), "data.has_photo", "must be true or false, not str"),
        (with_data(sku=12), "data.sku", "must be a string, not int"),
        (with_data(sku="x" * 65), "data.sku", "must be at most 64 characters"),
        (with_data("invite", invitee="x" * 65), "data.invitee", "must be at most 64 characters"),
        (with_data(channel="tv"), "data.channel", "must be one of app, web, store"),
        (with_data(channel="APP"), "data.channel", "must be one of"),
        (with_data("share", target="tiktok"), "data.target", "must be one of wechat, moments, weibo, link"),
    ],
)
def test_bad_data_is_refused_at_its_field(
    program: CompiledProgram, raw: dict[str, Any], field: str, message_part: str
) -> None:
    """Each data field is checked against its declared type, bounds and choices."""
    error = refused(program, raw)
    assert not isinstance(error, EventOutOfWindow)
    assert error.field == field
    assert message_part in error.message


def test_data_at_its_limits_is_accepted(program: CompiledProgram) -> None:
    """Values exactly at min, max, max_length and in one_of pass."""
    for data in ({"amount": 1}, {"amount": 100_000_000, "sku": "x" * 64, "channel": "store"}):
        assert parse_event(purchase(data=data), program, NOW_MS).data == data
    assert parse_event(with_data("review", stars=1, has_photo=False), program, NOW_MS).data == {
        "stars": 1,
        "has_photo": False,
    }


@pytest.mark.parametrize(
    "at",
    [
        "2026-11-11T10:00:03",  # naive
        "2026-11-11",  # a date is naive too
    ],
)
def test_at_needs_an_offset(program: CompiledProgram, at: str) -> None:
    """An `at` without a UTC offset is refused: its instant is unknown."""
    error = refused(program, purchase(at=at))
    assert error.field == "at"
    assert "UTC offset" in error.message


@pytest.mark.parametrize(
    "at",
    ["yesterday", "", "2026-13-11T10:00:03+08:00", "2026-11-11T10:00:03+08:00" + " " * 30, 1.5e12 + 0.5, True, -1,
     2**53, 1e23, [1], {"ms": 1}],
)
def test_at_garbage_is_refused(program: CompiledProgram, at: object) -> None:
    """`at` is ISO 8601 with an offset or integer epoch ms; anything else is refused at `at`."""
    error = refused(program, purchase(at=at))
    assert error.field == "at"
    assert not isinstance(error, EventOutOfWindow)


def test_at_within_the_window_is_accepted_at_its_bounds(program: CompiledProgram) -> None:
    """`at` may be exactly the retention old or exactly the skew ahead."""
    assert parse_event(purchase(at=NOW_MS - RETENTION_MS), program, NOW_MS).at_ms == NOW_MS - RETENTION_MS
    assert parse_event(purchase(at=NOW_MS + SKEW_MS), program, NOW_MS).at_ms == NOW_MS + SKEW_MS


def test_at_older_than_retention_is_too_old(program: CompiledProgram) -> None:
    """One millisecond older than the dedupe retention: EventOutOfWindow (a 422), so dedupe can never have expired."""
    error = refused(program, purchase(at=NOW_MS - RETENTION_MS - 1))
    assert isinstance(error, EventOutOfWindow)
    assert error.field == "at"
    assert "14-day" in error.message
    error = refused(program, purchase(at="2026-10-28T10:00:02+08:00"))  # 14 days and 1 s before NOW
    assert isinstance(error, EventOutOfWindow)


def test_epoch_seconds_are_named_as_such(program: CompiledProgram) -> None:
    """`at` in epoch seconds is refused with a message that says milliseconds are expected."""
    seconds = NOW_MS // 1000
    error = refused(program, purchase(at=seconds))
    assert isinstance(error, EventOutOfWindow) and error.field == "at"
    assert "epoch milliseconds" in error.message and str(seconds * 1000) in error.message


def test_a_shorter_window_refuses_what_the_retention_would_accept(program: CompiledProgram) -> None:
    """While a raised retention has not yet fully taken effect, the shorter window in force decides."""
    at = NOW_MS - 10 * 86_400_000
    assert parse_event(purchase(at=at), program, NOW_MS).at_ms == at
    error = refused(program, purchase(at=at), window_ms=7 * 86_400_000)
    assert isinstance(error, EventOutOfWindow) and error.field == "at"
    assert "7-day window" in error.message


def test_at_beyond_skew_is_refused(program: CompiledProgram) -> None:
    """One millisecond further ahead than the clock skew: EventOutOfWindow at `at`."""
    error = refused(program, purchase(at=NOW_MS + SKEW_MS + 1))
    assert isinstance(error, EventOutOfWindow)
    assert error.field == "at"
    assert "300 s" in error.message


def test_iso_and_epoch_ms_are_the_same_instant() -> None:
    """parse_time reads ISO with any offset and epoch ms to the same milliseconds."""
    assert parse_time("2026-11-11T10:00:03+08:00", "at") == NOW_MS
    assert parse_time("2026-11-11T02:00:03Z", "at") == NOW_MS
    assert parse_time("2026-11-11T02:00:03.250+00:00", "at") == NOW_MS + 250
    assert parse_time(NOW_MS, "at") == NOW_MS


# --- fingerprints: what makes a retry "the same event" ----------------------------------------


def fingerprint(program: CompiledProgram, raw: dict[str, Any], now_ms: int = NOW_MS) -> bytes:
    return parse_event(raw, program, now_ms).fingerprint


def test_same_body_same_fingerprint(program: CompiledProgram) -> None:
    """A retried body has the fingerprint of the first, whatever the key order of data."""
    a = purchase(at=NOW_MS, data={"amount": 19900, "sku": "tea-01"})
    b = purchase(at=NOW_MS, data={"sku": "tea-01", "amount": 19900})
    assert fingerprint(program, a) == fingerprint(program, b)
    assert fingerprint(program, a, NOW_MS + 60_000) == fingerprint(program, a)  # retried a minute later


def test_iso_and_epoch_at_give_the_same_fingerprint(program: CompiledProgram) -> None:
    """The same instant written as ISO (any offset) or epoch ms is the same event."""
    prints = {
        fingerprint(program, purchase(at=at))
        for at in (NOW_MS, "2026-11-11T10:00:03+08:00", "2026-11-11T02:00:03Z", "2026-11-11T02:00:03.000+00:00")
    }
    assert len(prints) == 1


def test_different_body_different_fingerprint(program: CompiledProgram) -> None:
    """Another amount, another optional field, another `at` or another type is another event."""
    base = fingerprint(program, purchase(at=NOW_MS))
    others = [
        purchase(at=NOW_MS, data={"amount": 19901, "sku": "tea-01"}),
        purchase(at=NOW_MS, data={"amount": 19900}),
        purchase(at=NOW_MS, data={"amount": 19900, "sku": "tea-02"}),
        purchase(at=NOW_MS - 1),
        purchase(),  # `at` omitted is not the same as `at` given
    ]
    prints = [fingerprint(program, raw) for raw in others]
    assert base not in prints
    assert len(set(prints)) == len(prints)
    share = {"id": "s", "member": "m", "type": "share"}
    assert fingerprint(program, share) != fingerprint(program, {**share, "type": "checkin"})


def test_omitted_at_does_not_enter_the_fingerprint(program: CompiledProgram) -> None:
    """Without `at`, a retry at another time is still the same event (at_ms differs, fingerprint not)."""
    first = parse_event(purchase(), program, NOW_MS)
    retry = parse_event(purchase(), program, NOW_MS + 3 * DAY_MS)
    assert first.at_ms != retry.at_ms
    assert first.fingerprint == retry.fingerprint


def test_ids_do_not_enter_the_fingerprint(program: CompiledProgram) -> None:
    """The fingerprint is of the body; the id and member are the key it is stored under."""
    assert fingerprint(program, purchase()) == fingerprint(program, purchase(id="other", member="m-7"))


@settings(max_examples=25, deadline=None, database=None)
@given(st.integers(min_value=-RETENTION_MS, max_value=SKEW_MS), st.sampled_from(["+08:00", "+00:00", "-05:30"]))
def test_any_instant_in_the_window_fingerprints_alike_in_iso_and_ms(
    program: CompiledProgram, offset_ms: int, tz: str
) -> None:
    """For any millisecond in the window, its ISO form and its epoch ms parse and fingerprint alike."""
    at_ms = NOW_MS + offset_ms
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    sign = -1 if tz[0] == "-" else 1
    zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    iso = datetime.fromtimestamp(at_ms // 1000, zone).replace(microsecond=at_ms % 1000 * 1000).isoformat()
    assert parse_time(iso, "at") == at_ms
    assert fingerprint(program, purchase(at=iso)) == fingerprint(program, purchase(at=at_ms))


def test_an_integral_number_is_an_integer_whatever_its_json_spelling(program: CompiledProgram) -> None:
    """JSON has one number type: `19900.0` is the integer 19900 (as JSON Schema says), the same event
    as `19900` (one fingerprint), and `at` likewise; `19900.5` and `true` are not integers."""
    plain = parse_event(purchase(at=NOW_MS - 1000), program, NOW_MS)
    spelled = parse_event(purchase(at=float(NOW_MS - 1000), data={"amount": 19900.0, "sku": "tea-01"}), program, NOW_MS)
    assert spelled.data == {"amount": 19900, "sku": "tea-01"} and type(spelled.data["amount"]) is int
    assert (spelled.at_ms, spelled.fingerprint) == (plain.at_ms, plain.fingerprint)
    assert refused(program, with_data(amount=19900.5)).field == "data.amount"
    assert refused(program, with_data(amount=True)).field == "data.amount"
    assert refused(program, with_data(amount=1e300)).field == "data.amount"
