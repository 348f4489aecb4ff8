"""Lua scripts: one ``.lua`` file each beside this module, loaded once and called by SHA.

The SHA is computed here from the file, so a caller never needs a round trip to learn it; a
server that lost its script cache (restart, ``SCRIPT FLUSH``, failover) answers NOSCRIPT and
the caller loads the source once and retries (see ``pipelining.AutoPipeline``).

A ``Command`` is the other thing a runner sends: one plain Redis command (a job's ``ZADD``),
which needs no script, so it can never be answered NOSCRIPT and never needs sending again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: bytes
    sha: str

    @classmethod
    def from_package(
        cls, name: str, *, package: str = "engine", with_lib: bool = False, with_object: bool = False
    ) -> "LuaScript":
        """The script in ``<package>/lua/`` (a game's scripts live in its own package).
        ``with_lib``: ``engine/lua/lib.lua``'s shared helpers go first; ``with_object``: an
        object's script, with lib.lua and ``object.lua`` (the cross-slot outbox, engine/crossing.py)
        first. Helpers are written once and the SHA covers exactly what runs."""
        engine_lua = resources.files("engine").joinpath("lua")
        source = resources.files(package).joinpath("lua").joinpath(name).read_bytes()
        if with_object:
            source = engine_lua.joinpath("object.lua").read_bytes() + b"\n" + source
        if with_lib or with_object:
            source = engine_lua.joinpath("lib.lua").read_bytes() + b"\n" + source
        return cls(name, source, hashlib.sha1(source).hexdigest())

    def encode(self, keys: Sequence[str], args: Sequence[Any]) -> bytes:
        """One call of the script in RESP: EVALSHA, its SHA, its KEYS and ARGV (hiredis packs in C)."""
        return hiredis.pack_command(("EVALSHA", self.sha, len(keys), *keys, *args))  # type: ignore[no-any-return]

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


@dataclass(frozen=True, slots=True)
class Command:
    """A plain Redis command sent through a runner like a script call: ``(Command("ZADD"),
    [jobs_key], ["NX", due_ms, job_id])`` sends ``ZADD jobs_key NX due_ms job_id``. Its keys are
    the command's key arguments in order (the first routes it on a cluster); its args follow
    them on the wire. Every name sent must be in ``servercheck.CLIENT_COMMANDS``."""

    name: str  # upper case: "ZADD"

    def encode(self, keys: Sequence[str], args: Sequence[Any]) -> bytes:
        return hiredis.pack_command((self.name, *keys, *args))  # type: ignore[no-any-return]

    async def load(self, redis: Redis) -> None:
        """Nothing to load: the server knows the command (the start-up check made sure)."""


class Scripts:
    """Every script the engine runs; objects (catalog stock, games) add theirs beside ``member``."""

    def __init__(self) -> None:
        self.member = LuaScript.from_package("member.lua", with_lib=True)
        self.replay = LuaScript.from_package("replay.lua")
        self.activate = LuaScript.from_package("activate.lua")
        self.catalog = LuaScript.from_package("catalog.lua", with_object=True)  # a catalog item's stock
        self.schedule = LuaScript.from_package("schedule.lua")  # the scheduler's (engine/scheduler.py)
        self.lease = LuaScript.from_package("lease.lua")
        self.schedule_done = LuaScript.from_package("schedule_done.lua", with_lib=True)
        self.outbox = LuaScript.from_package("outbox.lua", with_lib=True)  # outreach webhooks (engine/outreach.py)
        from engine.plugins import all_scripts, installed  # the games' modules import this one

        #: The installed games' object scripts (engine/plugins.py), loaded and checked like these.
        self.games = all_scripts(installed())

    def all(self) -> list[LuaScript]:
        return [self.member, self.replay, self.activate, self.catalog, self.schedule, self.lease, self.schedule_done,
                self.outbox, *self.games]

    async def load(self, redis: Redis) -> None:
        for script in self.all():
            await script.load(redis)
