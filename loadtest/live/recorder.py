"""What the subscriber keeps of every frame: its send and receive times, its sequence number.

Kept in ``array``s of machine integers, not objects: 50,000 frames a run stay a few hundred KiB
and no garbage collection walks them. Figures are taken afterwards, over the measured window
only (the sequence numbers the sender says it sent in that window).
"""

from __future__ import annotations

import math
from array import array
from typing import Any

import orjson

from loadtest.live.stamps import read_stamp
from loadtest.stats import percentile


class Recorder:
    """Every frame that carries a bench event id: its send and receive times, seq, member."""

    def __init__(self) -> None:
        self.send_ns = array("q")
        self.recv_ns = array("q")
        self.seq = array("q")
        self.misrouted = 0  # a frame for member i arrived on member j's socket
        self.other: dict[str, int] = {}  # frames without a bench id, by type (pong, reset, error)

    def on_message(self, member_index: int, payload: bytes, recv_ns: int) -> None:
        """One message as it arrived on member ``member_index``'s socket at ``recv_ns``."""
        try:
            frame = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.other["undecodable"] = self.other.get("undecodable", 0) + 1
            return
        data = frame.get("data") if isinstance(frame, dict) else None
        stamp = read_stamp(data.get("event")) if isinstance(data, dict) else None
        if stamp is None:
            kind = str(frame.get("type")) if isinstance(frame, dict) else "not an object"
            self.other[kind] = self.other.get(kind, 0) + 1
            return
        self.send_ns.append(stamp.sent_ns)
        self.recv_ns.append(recv_ns)
        self.seq.append(stamp.seq)
        if stamp.member_index != member_index:
            self.misrouted += 1

    def count_in(self, lo: int, hi: int) -> int:
        """Frames received so far with a sequence number in ``lo``..``hi``."""
        return sum(1 for q in self.seq if lo <= q <= hi)

    def report(self, lo: int, hi: int) -> dict[str, Any]:
        """Figures for the frames of the measured window: sequence numbers ``lo``..``hi``."""
        latencies: list[float] = []
        seqs: set[int] = set()
        frames = 0
        for s, r, q in zip(self.send_ns, self.recv_ns, self.seq, strict=True):
            if lo <= q <= hi:
                frames += 1
                latencies.append((r - s) / 1e6)
                seqs.add(q)
        latencies.sort()
        return {
            "frames": frames,
            "delivered": len(seqs),
            "duplicates": frames - len(seqs),
            "misrouted": self.misrouted,
            "other_frames": self.other,
            "p50_ms": percentile(latencies, 0.50),
            "p90_ms": percentile(latencies, 0.90),
            "p99_ms": percentile(latencies, 0.99),
            "p999_ms": percentile(latencies, 0.999),
            "max_ms": latencies[-1] if latencies else math.nan,
            "mean_ms": sum(latencies) / len(latencies) if latencies else math.nan,
        }
