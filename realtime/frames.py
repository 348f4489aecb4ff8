"""The live feed's rules, without I/O: frames, their encodings, and resuming without gaps.

A ``Frame`` is one effect at one feed id. It is encoded at most once per encoding, however many
sockets it goes to ("one encoding per message, not per socket"). ``Resume`` merges the replay of
the stream with live messages that arrive while the replay runs; ids decide what is new, so an
entry that arrives both ways is sent once, and in stream order.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack
import orjson

from engine.feed import WHOLE, Award, FeedId, decode_award


class CloseCode(enum.IntEnum):
    """WebSocket close codes this service sends; the client helper acts on each."""

    SERVICE_RESTART = 1012  # draining: reconnect (elsewhere) and resume
    BAD_REQUEST = 4400  # the client sent something unusable: fix it, do not retry as is
    UNAUTHORIZED = 4401  # token missing, expired or forged: get a new token first
    SLOW_CONSUMER = 4408  # the client fell too far behind: reconnect and resume
    RESUME = 4409  # this node lost its Redis subscription: reconnect and resume
    TOO_MANY = 4429  # the member already has the most sockets one process takes: close one first


#: Codes after which reconnecting with the same credentials and request cannot help.
FATAL_CLOSE_CODES = frozenset({CloseCode.BAD_REQUEST, CloseCode.UNAUTHORIZED, CloseCode.TOO_MANY})


class Encoding(enum.Enum):
    JSON = "rekindle.json"
    MSGPACK = "rekindle.msgpack"

    @classmethod
    def negotiate(cls, offered: list[str]) -> "Encoding | None":
        """The first subprotocol of ours the client offers; None if it offers none of ours."""
        for name in offered:
            for enc in cls:
                if name == enc.value:
                    return enc
        return None


class Frame:
    __slots__ = ("id", "sid", "type", "data", "_json", "_msgpack")

    def __init__(self, feed_id: str, sid: FeedId, kind: str, data: Any) -> None:
        self.id = feed_id
        self.sid = sid
        self.type = kind
        self.data = data
        self._json: str | None = None
        self._msgpack: bytes | None = None

    def encoded(self, encoding: Encoding) -> str | bytes:
        """Text for JSON, bytes for msgpack; computed once per frame and encoding."""
        if encoding is Encoding.JSON:
            if self._json is None:
                self._json = orjson.dumps({"id": self.id, "type": self.type, "data": self.data}).decode()
            return self._json
        if self._msgpack is None:
            self._msgpack = msgpack.packb({"id": self.id, "type": self.type, "data": self.data})
        return self._msgpack


class WatchFrame(Frame):
    """A feed frame of a watched object's owner, sent to a watcher: the owner's frame (its id in the
    owner's stream, its type and data) with the object's key at the top level (``"bargain": id``),
    so that it is told apart from the socket's own feed frames. Encoded once per watch."""

    __slots__ = ("key", "obj")

    def __init__(self, frame: Frame, key: str, obj: str) -> None:
        super().__init__(frame.id, frame.sid, frame.type, frame.data)
        self.key = key
        self.obj = obj

    def encoded(self, encoding: Encoding) -> str | bytes:
        body = {"id": self.id, self.key: self.obj, "type": self.type, "data": self.data}
        if encoding is Encoding.JSON:
            if self._json is None:
                self._json = orjson.dumps(body).decode()
            return self._json
        if self._msgpack is None:
            self._msgpack = msgpack.packb(body)
        return self._msgpack


def feed_id_text(sid: FeedId) -> str:
    """A feed id as clients send and see it: ``<ms>-<seq>-<i>``, or ``<ms>-<seq>`` for a whole entry."""
    return f"{sid[0]}-{sid[1]}" if sid[2] == WHOLE else f"{sid[0]}-{sid[1]}-{sid[2]}"


def control(kind: str, encoding: Encoding, **data: Any) -> str | bytes:
    """A frame that is not a feed entry (pong, reset, error): no id."""
    body: dict[str, Any] = {"type": kind, **data}
    return orjson.dumps(body).decode() if encoding is Encoding.JSON else msgpack.packb(body)


def frames_of(award: Award) -> list[Frame]:
    """One frame per effect of an award, with ids ``<entry id>-<i>``."""
    if not award.entry_id:
        return []
    ms_text, _, seq_text = award.entry_id.partition("-")
    ms, seq = int(ms_text), int(seq_text)
    frames = []
    for i, (kind, data) in enumerate(award.effects):
        data["event"] = award.event_id
        frames.append(Frame(f"{award.entry_id}-{i}", (ms, seq, i), kind, data))
    return frames


def frames_from_message(raw: bytes) -> list[Frame]:
    """Frames of one pub/sub message of member.lua (the same bytes as its reply)."""
    award = decode_award(raw)
    return frames_of(award) if isinstance(award, Award) else []


class Resume:
    """Replay first, live after; every id sent once, in increasing order.

    Subscribe, then create a ``Resume``, then read the replay: a live message can arrive before
    the replay is read (it is held back) or be part of the replay too (it is dropped as seen).
    ``rewind`` goes back to holding, to replay from an older id, while no feed frame has been
    sent: after one, older frames could only follow newer ones, out of order.
    """

    __slots__ = ("last", "_start", "_held")

    def __init__(self) -> None:
        self.last: FeedId = (0, 0, 0)
        self._start: FeedId = self.last  # where the last replay started; last > _start: sent some
        self._held: list[Frame] | None = []  # None once live

    @property
    def live(self) -> bool:
        return self._held is None

    @property
    def sent_any(self) -> bool:
        """Whether a feed frame went out since the replay started (read at a resume, not per frame)."""
        return self.last > self._start

    def on_live(self, frames: list[Frame]) -> list[Frame]:
        if self._held is not None:
            self._held.extend(frames)
            return []
        return self._newer(frames)

    def on_replay(self, start: FeedId, frames: list[Frame]) -> list[Frame]:
        """``start``: the id the client has seen up to (or where the socket starts without one)."""
        held, self._held = self._held or [], None
        self.last = self._start = max(self.last, start)
        return self._newer(frames) + self._newer(sorted(held, key=lambda f: f.sid))

    def rewind(self) -> bool:
        """Hold live frames again so the next ``on_replay`` may start earlier; False (and no
        change) once a feed frame was sent."""
        if self.sent_any:
            return False
        if self._held is None:
            self._held = []
        self.last = self._start = (0, 0, 0)
        return True

    def _newer(self, frames: list[Frame]) -> list[Frame]:
        out = []
        for frame in frames:
            if frame.sid > self.last:
                out.append(frame)
                self.last = frame.sid
        return out
