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
    return EventId(check_id(value, field, EVENT_ID_MAX))


def kind_of(value: object) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


_EXACT = 2**53  # beyond this a JSON number's integer value is not exact in a double


def whole(value: object) -> int | None:
    """``value`` as an integer if JSON would call it one, else None.

    JSON has one number type, and JSON Schema's ``integer`` is any number with no fraction: a
    client whose encoder writes ``100.0`` sends an integer. So does ``100``. A boolean is not one
    (Python's bool is an int), nor is ``100.5``, nor a float too large to hold an exact integer.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and -_EXACT <= value <= _EXACT:
        return int(value)
    return None

