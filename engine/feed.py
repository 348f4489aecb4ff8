"""Reading a member's progress stream back: the store side of resuming the live feed.

Ids are Redis stream ids, ``<ms>-<seq>``, compared as integer pairs. ``Replay.gap`` is how a
resuming client learns that entries after its id were trimmed away (``max-deleted-entry-id``
from XINFO, Redis 7+) and it must refetch its snapshot instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from engine.errors import InvalidInput
from engine.ids import MemberId
from engine.keys import Keys
from engine.scripts import Scripts

StreamId = tuple[int, int]
_ID = re.compile(r"(\d{1,15})-(\d{1,10})")
PAGE = 500


def parse_stream_id(value: object, field: str = "since") -> StreamId:
    match = _ID.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput("must be a feed id such as 1795695206746-0", field=field)
    return int(match[1]), int(match[2])


def format_stream_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


@dataclass(frozen=True, slots=True)
class Replay:
    last_id: StreamId  # the newest id the stream ever had ("0-0": none)
    gap: bool  # entries after `since` are gone (trimmed) or `since` is from another history
    entries: list[tuple[str, dict[bytes, bytes]]]  # (id, fields) after `since`, oldest first


class FeedStore:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts

    async def replay(self, member: MemberId, since: StreamId | None) -> Replay:
        """Everything after ``since`` (nothing when None), with the stream's bounds."""
        key = self._keys.member(member).feed
        start = format_stream_id(since) if since is not None else ""
        last_raw, deleted_raw, raw_entries = await self._scripts.replay.run(self._redis, [key], [start, PAGE])
        last_id = parse_stream_id(last_raw.decode())
        max_deleted = parse_stream_id(deleted_raw.decode())
        if since is None:
            return Replay(last_id, False, [])
        if since < max_deleted or since > last_id:
            return Replay(last_id, True, [])
        entries = [(_decode_id(eid), _pairs(fields)) for eid, fields in raw_entries]
        while len(raw_entries) == PAGE:  # longer than a page: read on, exclusive of the last id
            raw_entries = await self._redis.xrange(key, min="(" + entries[-1][0], max="+", count=PAGE)
            entries += [(_decode_id(eid), dict(fields)) for eid, fields in raw_entries]
        return Replay(last_id, False, entries)


def _decode_id(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
