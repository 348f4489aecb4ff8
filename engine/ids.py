"""Ids that reach a Redis key, checked before anything else touches them.

A member id ends up inside a hash tag (``rk:{m:<id>}:xp``), so an id with a brace could steer a
key into another slot or name another member's keys. The alphabet below has no braces, no
whitespace and nothing a key parser treats specially; lengths are bounded so keys stay small.
"""

from __future__ import annotations

import re
from typing import NewType

from engine.errors import InvalidInput

MemberId = NewType("MemberId", str)
EventId = NewType("EventId", str)

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")

MEMBER_ID_MAX = 64
EVENT_ID_MAX = 128
NAME_MAX = 64

#: Operation ids the engine makes for itself (a scheduled expiry, a game's or a care moment's
#: member step) start with this, and no client id may: an operation id is its dedupe key, so a
#: client that could post ``rk:expire:m-42:<ms>`` first would make the job a duplicate (or a
#: conflict) and its work would never happen. Within the id alphabet on purpose: a derived
#: operation's coupons are named after it and must be usable through the same routes.
DERIVED_PREFIX = "rk:"
#: A derived id may be longer than a client's: it may hold one (``rk:undo:<operation id>``).
#: Never a key: an id reaches Redis only as a digest, or inside a value.
DERIVED_ID_MAX = 256


def check_id(value: object, field: str, max_len: int) -> str:
    """Return ``value`` if it is a safe id of at most ``max_len`` chars, else raise."""
    if not isinstance(value, str):
        raise InvalidInput(f"must be a string, not {kind_of(value)}", field=field)
    if not 1 <= len(value) <= max_len:
        raise InvalidInput(f"must be 1 to {max_len} characters long", field=field)
    if _SAFE.fullmatch(value) is None:
        raise InvalidInput(
            "may hold only letters, digits and . _ : @ - (and must start with a letter or digit)",
            field=field,
        )
    return value


def member_id(value: object, field: str = "member") -> MemberId:
    return MemberId(check_id(value, field, MEMBER_ID_MAX))


def event_id(value: object, field: str = "id") -> EventId:
    """A client's operation id (an event's, a spend's...): any safe id outside the engine's own
    namespace (``DERIVED_PREFIX``)."""
    checked = check_id(value, field, EVENT_ID_MAX)
    if checked.startswith(DERIVED_PREFIX):
        raise InvalidInput(f"may not start with {DERIVED_PREFIX!r}: that prefix is reserved for the engine's own operations", field=field)
    return EventId(checked)


def derived_id(*parts: object) -> EventId:
    """The id of an operation the engine derives (``rk:expire:m-42:1798732800000``): made here
    only, so no client id can be one. Parts are joined with ``:``; the result must still be a
    safe id of at most ``DERIVED_ID_MAX`` characters (a bug otherwise, hence ``ValueError``)."""
    value = DERIVED_PREFIX + ":".join(str(p) for p in parts)
    if len(value) > DERIVED_ID_MAX or _SAFE.fullmatch(value) is None:
        raise ValueError(f"not a safe derived id: {value!r}")
    return EventId(value)


def kind_of(value: object) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def whole(value: object) -> int | None:
    """``value`` as an integer if JSON would call it one, else None.

    JSON has one number type, and JSON Schema's ``integer`` is any number with no fraction: a
    client whose encoder writes ``100.0`` sends an integer. So does ``100``. A boolean is not one
    (Python's bool is an int), nor is ``100.5``. A number too large for a 64-bit integer reaches
    us as a float (orjson parses ``100000000000000000000000`` to ``1e+23``): it is an integer
    still, returned as the nearest int, which is not exact past 2**53 but is past every bound a
    caller checks, so the caller's answer is "above the maximum", not "not an integer".
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # finite: orjson refuses 1e400
        return int(value)
    return None

