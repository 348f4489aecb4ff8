"""Programme versions, shared by every process of the service through Redis.

Activating a programme stores its source as a numbered version and points ``active`` at it,
atomically (``activate.lua``); activating the source that is already active changes nothing, so
several workers starting from the same file agree on one version. Each process keeps the
compiled active programme in memory (``current``), follows changes by pub/sub, and re-reads the
pointer now and then in case a message was missed while its connection was down.

Each version records its dedupe retention, because an event id must never award twice whatever
retention changes a programme makes: dedupe entries written under a shorter retention expire
sooner, so after a raise the window an event's ``at`` may lie in stays at the shorter one until
every entry written under it has had the new window to age (``ActiveProgram.window_ms``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from redis.asyncio import Redis

from engine.clock import DAY_MS, Clock
from engine.config import CompiledProgram, compile_program, parse_program
from engine.errors import ConfigError, NotFound
from engine.keys import Keys
from engine.scripts import Scripts
from engine.views import ConfigVersion

log = logging.getLogger("rekindle.programs")


#: What a version activated before retentions were recorded is taken to have had: the least
#: a programme may set, so the guess can only refuse an event, never let one through twice.
UNRECORDED_RETENTION_MS = 7 * DAY_MS


@dataclass(frozen=True, slots=True)
class ActiveProgram:
    program_version: int
    program: CompiledProgram
    origin: str
    activated_at_ms: int
    #: (active until ms, retention ms) of earlier versions whose dedupe entries may still matter
    earlier: tuple[tuple[int, int], ...] = ()

    def window_ms(self, now_ms: int) -> int:
        """How far before ``now_ms`` an event's ``at`` may lie: the programme's retention, or the
        shortest retention in force at any time during the last retention (plus the allowed clock
        skew and a day of slack: an event's first sighting may precede its ``at`` by the skew).

        Safe because an entry written at ``t`` under retention ``r`` lives at least until
        ``at + r``; an event accepted now is at most ``window`` old, and its first sighting was
        under a retention that was in force inside the horizon, so ``window <= r`` there.
        """
        window = self.program.retention_ms
        horizon = now_ms - window - self.program.skew_ms - DAY_MS
        for until_ms, retention_ms in self.earlier:
            if until_ms > horizon and retention_ms < window:
                window = retention_ms
        return window


class FileActivation(NamedTuple):
    """What starting from a programme file left active, and whether it is that file's content."""

    active: ActiveProgram
    applied: bool  # False: the store last started from this same file, and a version since stays


class ProgramRegistry:
    def __init__(self, redis: Redis, keys: Keys, clock: Clock, on_change: Callable[[int], None] | None = None) -> None:
        self._redis = redis
        self._on_change = on_change  # told the version number whenever the held version changes
        self._keys = keys
        self._clock = clock
        self._script = Scripts().activate
        self._current: ActiveProgram | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def current(self) -> ActiveProgram:
        if self._current is None:
            raise NotFound("no programme is active")
        return self._current

    async def activate(self, source: bytes, origin: str, file: str = "<posted>") -> ActiveProgram:
        """Validate ``source`` and make it the active version; raise ``ConfigError`` if invalid."""
        program = compile_program(parse_program(source, file), source)
        k = self._keys.config
        version, created = await self._script.run(
            self._redis,
            [k("seq"), k("active"), k("versions"), k("meta"), k("file_hash")],
            [source, hashlib.sha256(source).hexdigest(), origin, self._clock.now_ms(), k("changed"),
             "1" if origin.startswith("file:") else "0", program.retention_ms],
        )
        if created:
            log.info("programme version %s activated from %s", version, origin)
        # If another process activated a newer version in between, theirs is what we now hold.
        await self.refresh()
        return self.current

    async def activate_file(self, path: Path) -> FileActivation:
        """Start from the programme file at ``path``: activated unless the store last started from
        this same content, in which case what is active stays (maybe a version posted since, so
        that a restart never undoes ``POST /v1/config``; ``activate.lua`` decides)."""
        source = path.read_bytes()
        active = await self.activate(source, origin=f"file:{path}", file=str(path))
        return FileActivation(active, applied=active.program.source == source)

    async def refresh(self) -> bool:
        """Load the active version if it differs from the one held; True when it changed."""
        k = self._keys.config
        active = await self._redis.get(k("active"))
        if active is None:
            return False
        version = int(active)
        if self._current is not None and self._current.program_version == version:
            return False
        pipe = self._redis.pipeline(transaction=True)
        pipe.hget(k("versions"), version)
        pipe.hgetall(k("meta"))
        source, meta = await pipe.execute()
        origin, at_ms = meta.get(f"{version}:origin".encode()), meta.get(f"{version}:at_ms".encode())
        if source is None:
            return False
        try:
            program = compile_program(parse_program(source, f"version {version}"), source)
        except ConfigError as exc:  # only possible if a newer engine tightened the rules
            log.error("active programme version %s no longer validates: %s", version, exc)
            return False
        if self._current is not None and version < self._current.program_version:
            return False  # a concurrent refresh already took a newer one (numbers only grow)
        self._current = ActiveProgram(version, program, (origin or b"").decode(), int(at_ms or 0), _earlier(meta, version))
        if self._on_change is not None:
            self._on_change(version)
        log.info("programme version %s active (%s)", version, program.program_hash)
        return True

    async def history(self, limit: int = 20) -> list[ConfigVersion]:
        k = self._keys.config
        last = int(await self._redis.get(k("seq")) or 0)
        numbers = list(range(last, max(0, last - limit), -1))
        if not numbers:
            return []
        fields = [f"{n}:{part}" for n in numbers for part in ("hash", "origin", "at_ms")]
        values: list[bytes | None] = await self._redis.hmget(k("meta"), fields)  # type: ignore[assignment]  # no decode_responses
        out = []
        for i, n in enumerate(numbers):
            digest, origin, at_ms = values[3 * i : 3 * i + 3]
            out.append(ConfigVersion(program_version=n, program_hash=(digest or b"").decode()[:16],
                                     origin=(origin or b"").decode(), activated_at_ms=int(at_ms or 0)))
        return out

    def start_watching(self, interval_s: float = 5.0) -> None:
        self._watcher = asyncio.create_task(self._watch(interval_s), name="programme-watcher")

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except asyncio.CancelledError:
                pass
            self._watcher = None

    async def _watch(self, interval_s: float) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._keys.config("changed"))
                await self.refresh()  # anything activated before the subscription took hold
                while True:
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=interval_s)
                    await self.refresh()  # on a message, or every interval_s in case one was lost
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: keep the current version, try again
                log.warning("programme watcher: %s; retrying", type(exc).__name__)
                await asyncio.sleep(interval_s)
            finally:
                await pubsub.aclose()


#: The longest retention a programme may set (``ProgramInfo.dedupe_retention_days``) plus slack:
#: versions that stopped being active before this are past mattering.
_HORIZON_MS = 91 * DAY_MS


def _earlier(meta: dict[bytes, bytes], version: int) -> tuple[tuple[int, int], ...]:
    """(active until, retention) of the versions before ``version`` that may still matter."""
    at = {n: int(meta.get(f"{n}:at_ms".encode(), 0)) for n in range(1, version + 1)}
    cutoff = at[version] - _HORIZON_MS
    out = []
    for n in range(version - 1, 0, -1):
        until = at[n + 1]
        if until < cutoff:
            break
        raw = meta.get(f"{n}:retention_ms".encode())
        out.append((until, int(raw) if raw is not None else UNRECORDED_RETENTION_MS))
    return tuple(out)
