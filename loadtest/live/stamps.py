"""The id every pushed frame carries, ``b-<send ns>-<seq>-<member index>``.

The sender (the poster's award, the baseline's frame) writes it; the subscriber reads the send
time back out of it for the latency, the sequence number to count each frame once, and the
member to catch a frame delivered to the wrong socket.
"""

from __future__ import annotations

from typing import NamedTuple


class Stamp(NamedTuple):
    sent_ns: int
    seq: int
    member_index: int


def event_id(sent_ns: int, seq: int, member_index: int) -> str:
    """The id of the frame sent at ``sent_ns``, ``seq``-th of the run, for member ``member_index``."""
    return f"b-{sent_ns}-{seq}-{member_index}"


def read_stamp(value: object) -> Stamp | None:
    """The stamp in an event id; None for anything else (an id the bench did not write)."""
    parts = value.split("-") if isinstance(value, str) else []
    if len(parts) != 4 or parts[0] != "b":
        return None
    try:
        return Stamp(int(parts[1]), int(parts[2]), int(parts[3]))
    except ValueError:
        return None
