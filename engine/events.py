"""Member events: checked against the active programme before anything else happens.

``parse_event`` is pure: it turns one decoded JSON object into an ``Event`` or raises
``InvalidEvent`` naming the field. Nothing here touches Redis, so bad input cannot reach it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


from engine import ids
from engine.config import CompiledProgram, FieldType
from engine.errors import EventOutOfWindow, InvalidEvent, InvalidInput
from engine.operations import fingerprint

_TOP_KEYS = frozenset({"id", "member", "type", "at", "data"})
_INT_MAX = 2**53 - 1  # Lua numbers are doubles: beyond this integers stop being exact
#: An int field of an event's data lies within +-DATA_INT_MAX whatever its programme says:
#: 10^12 cents is ¥10 billion, and every sum the award script makes from such values stays exact.
DATA_INT_MAX = 10**12


@dataclass(frozen=True, slots=True)
class Event:
    id: ids.EventId
    member: ids.MemberId
    type: str
    at_ms: int
    data: dict[str, Any]
    fingerprint: bytes  # what makes a retry "the same event": type, data and an explicit `at`


#: Epoch milliseconds below this are before March 1973: almost surely epoch seconds sent by mistake.
_SECONDS_LOOKALIKE = 10**11


def parse_event(raw: object, program: CompiledProgram, now_ms: int, window_ms: int | None = None) -> Event:
    """Validate one event object; ``at`` defaults to ``now_ms`` and must lie in the dedupe window.

    ``window_ms``: how far back ``at`` may lie now (``ActiveProgram.window_ms``), when a recent
    raise of the retention keeps it shorter than the programme's own retention.
    """
    if not isinstance(raw, dict):
        raise InvalidEvent(f"an event must be a JSON object, not {ids.kind_of(raw)}")
    unknown = raw.keys() - _TOP_KEYS
    if unknown:
        name = sorted(map(str, unknown))[0]
        raise InvalidEvent("unknown key (expected id, member, type, at, data)", field=name)
    for key in ("id", "member", "type"):
        if key not in raw:
            raise InvalidEvent("is required", field=key)
    try:
        event_id = ids.event_id(raw["id"], "id")
        member = ids.member_id(raw["member"], "member")
    except InvalidInput as exc:
        raise InvalidEvent(exc.message, field=exc.field) from None
    etype = raw["type"]
    if not isinstance(etype, str) or etype not in program.events:
        known = ", ".join(sorted(program.events))
        raise InvalidEvent(f"unknown event type; this programme declares: {known}", field="type")

    given_at = raw.get("at")
    if isinstance(given_at, float) and ids.whole(given_at) is not None:
        given_at = ids.whole(given_at)  # 1731234567000.0 is the integer JSON says it is
    at_ms = now_ms if given_at is None else parse_time(given_at, "at")
    window = program.retention_ms if window_ms is None else window_ms
    if at_ms < now_ms - window:
        if isinstance(given_at, int) and at_ms < _SECONDS_LOOKALIKE:
            raise EventOutOfWindow(
                f"takes epoch milliseconds; {given_at} looks like epoch seconds (send {given_at * 1000})", field="at"
            )
        days, full_days = window / 86_400_000, program.retention_ms // 86_400_000
        if window < program.retention_ms:
            raise EventOutOfWindow(
                f"is older than the {days:g}-day window events are accepted in now: the retention was raised "
                f"to {full_days} days recently, and older events are accepted once the new window has passed",
                field="at",
            )
        raise EventOutOfWindow(f"is older than the {full_days}-day dedupe retention window", field="at")
    if at_ms > now_ms + program.skew_ms:
        raise EventOutOfWindow(
            f"lies in the future beyond the allowed clock skew ({program.skew_ms // 1000} s)",
            field="at",
        )

    data = _check_data(raw.get("data", {}), program, etype)
    # A retry is the same event when its type, data and explicit `at` are (an omitted `at` is
    # "when it arrived", which a retry cannot repeat).
    digest = fingerprint(etype, None if given_at is None else at_ms, data)
    return Event(event_id, member, etype, at_ms, data, digest)


def parse_time(value: object, field: str) -> int:
    """ISO 8601 with an offset, or integer epoch milliseconds, to epoch milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value > _INT_MAX:
            raise InvalidEvent(f"is above the maximum, {_INT_MAX} (epoch milliseconds)", field=field)
        if value < 0:
            raise InvalidEvent("epoch milliseconds must not be negative", field=field)
        return value
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                raise InvalidEvent("needs a UTC offset, e.g. 2026-11-11T10:00:03+08:00", field=field)
            return int(parsed.timestamp() * 1000)
    raise InvalidEvent("must be ISO 8601 with an offset or integer epoch milliseconds", field=field)


def _check_data(data: object, program: CompiledProgram, etype: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidEvent(f"must be an object, not {ids.kind_of(data)}", field="data")
    fields = program.events[etype].fields
    data = dict(data)  # integral numbers become ints (below): the fingerprint and plan see one form
    for key in data:
        if key not in fields:
            declared = ", ".join(sorted(fields)) or "none"
            raise InvalidEvent(
                f"unknown field for event type {etype!r} (declared: {declared})", field=f"data.{key}"
            )
    for name, spec in fields.items():
        path = f"data.{name}"
        if name not in data:
            if spec.required:
                raise InvalidEvent("is required", field=path)
            continue
        value = data[name]
        if spec.type is FieldType.INT:
            whole = ids.whole(value)
            if whole is None:
                raise InvalidEvent(f"must be an integer, not {ids.kind_of(value)}", field=path)
            value = data[name] = whole
            low = spec.min if spec.min is not None else -DATA_INT_MAX
            high = spec.max if spec.max is not None else DATA_INT_MAX
            if value < low:
                raise InvalidEvent(f"must be at least {low}", field=path)
            if value > high:
                raise InvalidEvent(f"is above the maximum, {high}", field=path)
        elif spec.type is FieldType.STR:
            if not isinstance(value, str):
                raise InvalidEvent(f"must be a string, not {ids.kind_of(value)}", field=path)
            if len(value) > spec.max_length:
                raise InvalidEvent(f"must be at most {spec.max_length} characters", field=path)
            if spec.one_of is not None and value not in spec.one_of:
                raise InvalidEvent(f"must be one of {', '.join(spec.one_of)}", field=path)
        elif not isinstance(value, bool):
            raise InvalidEvent(f"must be true or false, not {ids.kind_of(value)}", field=path)
    return data
