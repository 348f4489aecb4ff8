"""Lua scripts: one ``.lua`` file each beside this module, loaded once and called by SHA.

The SHA is computed here from the file, so a caller never needs a round trip to learn it; a
server that lost its script cache (restart, ``SCRIPT FLUSH``, failover) answers NOSCRIPT and
the caller loads the source once and retries (see ``pipelining.AutoPipeline``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: bytes
    sha: str

    @classmethod
    def from_package(cls, name: str, *, with_lib: bool = False) -> "LuaScript":
        """The script in ``engine/lua/``; ``with_lib``: ``lib.lua``'s shared helpers go first, so
        they are written once and the SHA covers exactly what runs."""
        folder = resources.files("engine").joinpath("lua")
        source = folder.joinpath(name).read_bytes()
        if with_lib:
            source = folder.joinpath("lib.lua").read_bytes() + b"\n" + source
        return cls(name, source, hashlib.sha1(source).hexdigest())

    async def load(self, redis: Redis) -> None:
        sha = await redis.script_load(self.source)
        if sha != self.sha:  # pragma: no cover - would mean the server hashes differently
            raise RuntimeError(f"{self.name}: server SHA {sha} differs from ours {self.sha}")

    async def run(self, redis: Redis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """One call, off the hot path (the award path goes through ``AutoPipeline``)."""
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load(redis)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)


class Scripts:
    """Every script the engine runs; objects (catalog stock, games) add theirs beside ``member``."""

    def __init__(self) -> None:
        self.member = LuaScript.from_package("member.lua", with_lib=True)
        self.replay = LuaScript.from_package("replay.lua")
        self.activate = LuaScript.from_package("activate.lua")
        self.catalog = LuaScript.from_package("catalog.lua")  # a catalog item's stock and outbox
        self.schedule = LuaScript.from_package("schedule.lua")  # the scheduler's (engine/scheduler.py)
        self.lease = LuaScript.from_package("lease.lua")
        self.schedule_done = LuaScript.from_package("schedule_done.lua", with_lib=True)

    def all(self) -> list[LuaScript]:
        return [self.member, self.replay, self.activate, self.catalog, self.schedule, self.lease, self.schedule_done]

    async def load(self, redis: Redis) -> None:
        for script in self.all():
            await script.load(redis)
