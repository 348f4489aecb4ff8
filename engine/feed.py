"""A member's progress feed: what member.lua appends, and reading it back to resume.

The stream holds one entry per award, ``d`` = msgpack ``[[type, data], ...]``. Clients see one
frame per effect, with feed id ``<ms>-<seq>-<i>`` (effect ``i`` of entry ``<ms>-<seq>``); the
snapshot's ``feed_id`` is the newest such id. A bare entry id ``<ms>-<seq>`` is accepted too and
means "everything up to and including that award". Ids compare as integer triples.

Resuming from an id needs to know whether anything after it is gone. ``XADD ... MAXLEN ~``
trimming does not move ``max-deleted-entry-id`` (only XDEL does), so a resume is also a gap
when entries were ever trimmed and the id lies before the first one kept: that errs towards
telling a client to refetch, never towards a silent loss.

A socket can also start from a moment rather than an id: ``just_before(ms)`` sorts before every
entry XADD makes at or after ``ms`` by the store's clock (``TIME``), since ``*`` ids are that
clock's milliseconds and never go backwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

import msgpack
from redis.asyncio import Redis

from engine.errors import InvalidInput
from engine.ids import MemberId
from engine.keys import Keys
from engine.ledger import StreamPage
from engine.scripts import Scripts

FeedId = tuple[int, int, int]  # (ms, seq, effect index)
WHOLE = 1 << 30  # the index of a bare entry id: every effect of the entry
MAX_SEQ = (1 << 64) - 1  # a stream id's largest sequence number
_ID = re.compile(r"([0-9]{1,15})-([0-9]{1,10})(?:-([0-9]{1,6}))?")
PAGE = 500


def parse_feed_id(value: object, field: str = "since") -> FeedId:
    match = _ID.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput("must be a feed id such as 1795695206746-0-2", field=field)
    index = int(match[3]) if match[3] is not None else WHOLE
    return int(match[1]), int(match[2]), index


def just_before(at_ms: int) -> FeedId:
    """The feed id just before every entry the stream makes at or after ``at_ms`` (store clock)."""
    return at_ms - 1, MAX_SEQ, WHOLE


def _entry_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


@dataclass(frozen=True, slots=True)
class Award:
    """One feed entry: an applied award's effects, as member.lua published or stored them."""

    entry_id: str  # "" when the award had no effect (nothing was appended)
    event_id: str
    effects: list[tuple[str, dict[str, Any]]]


def decode_award(raw: bytes) -> Award | int:
    """member.lua's reply or pub/sub message, [entry id, event id, effects]: an ``Award``; or
    its status code [0] duplicate, [2] conflict."""
    reply = msgpack.unpackb(raw, raw=False, strict_map_key=False, use_list=False)
    if len(reply) == 1:
        return int(reply[0])
    return Award(reply[0], reply[1], list(reply[2]))


@dataclass(frozen=True, slots=True)
class Replay:
    last: FeedId  # the newest award's entry, as a whole ((0, 0, WHOLE): none yet)
    gap: bool  # entries after `since` are gone (trimmed) or `since` is from another history
    awards: list[Award]  # after `since`, oldest first (the first may be partly seen already)


class FeedStore:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts

    async def end(self, member: MemberId) -> FeedId:
        """The newest award's id, as a whole: where a socket that names no ``since`` starts."""
        return (await self.replay(member, None)).last

    async def replay(self, member: MemberId, since: FeedId | None, *, moment: bool = False) -> Replay:
        """Every award after ``since`` (nothing when None), and whether some are gone.

        ``moment``: ``since`` is ``just_before(ms)`` of a moment, not an id a client saw, so a
        stream that ends before it is not another history: it just has nothing newer yet.
        """
        key = self._keys.member(member).feed
        if since is None:
            start = ""
        elif since[2] == WHOLE:
            start = f"({since[0]}-{since[1]}"  # that whole award was seen
        else:
            start = f"{since[0]}-{since[1]}"  # part of it was seen: read it again
        last_raw, first_raw, deleted_raw, added, length, raw_entries = await self._scripts.replay.run(
            self._redis, [key], [start, PAGE]
        )
        last = (*_entry_id(last_raw), WHOLE)
        if since is None:
            return Replay(last, False, [])
        seen = since[:2]
        trimmed = int(added) > int(length)
        if (
            (seen > last[:2] and not moment)
            or seen < _entry_id(deleted_raw)
            or (trimmed and seen < _entry_id(first_raw))
        ):
            return Replay(last, True, [])
        awards = [_award(eid, _pairs(fields)) for eid, fields in raw_entries]
        while len(raw_entries) == PAGE:  # longer than a page: read on, after the last entry read
            raw_entries = cast(StreamPage, await self._redis.xrange(key, min="(" + awards[-1].entry_id, max="+", count=PAGE))
            awards += [_award(eid, fields) for eid, fields in raw_entries]
        return Replay(last, False, awards)


def _award(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Award:
    effects = msgpack.unpackb(fields[b"d"], raw=False, strict_map_key=False, use_list=False)
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Award(eid, fields[b"e"].decode(), list(effects))


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
