"""Programme versions in Redis: activation is idempotent per source, versions count up, every process follows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.cluster import client_from_url
from engine.clock import DAY_MS, ManualClock
from engine.errors import ConfigError, EventOutOfWindow, NotFound
from engine.events import parse_event
from engine.keys import Keys
from engine.programs import ProgramRegistry

AT_MS = 1_794_362_403_000


def test_activation_versions(redis_url: str, prefix: str, example_config_path: Path) -> None:
    """Same source twice -> same version; another source -> the next version; history lists both."""
    source = example_config_path.read_bytes()
    changed = source.replace(b"max_clock_skew_s = 300", b"max_clock_skew_s = 120")
    assert changed != source

    async def run() -> None:
        redis = client_from_url(redis_url)
        try:
            registry = ProgramRegistry(redis, Keys(prefix), ManualClock(AT_MS))
            with pytest.raises(NotFound):
                registry.current  # noqa: B018 - nothing is active yet
            first = await registry.activate(source, "file:config/member_day.toml")
            assert (first.program_version, first.origin, first.activated_at_ms) == (1, "file:config/member_day.toml", AT_MS)
            assert first.program.skew_ms == 300_000
            again = await registry.activate(source, "api")
            assert (again.program_version, again.origin) == (1, "file:config/member_day.toml")
            second = await registry.activate(changed, "api")
            assert second.program_version == 2
            assert registry.current.program_version == 2
            assert registry.current.program.skew_ms == 120_000
            history = await registry.history()
            assert [(h["program_version"], h["origin"]) for h in history] == [(2, "api"), (1, "file:config/member_day.toml")]
            assert history[1]["program_hash"] == first.program.program_hash
        finally:
            await redis.aclose()

    asyncio.run(run())


def test_a_second_process_follows_activation(redis_url: str, prefix: str, example_config_path: Path) -> None:
    """A watching registry picks up each version another registry activates, through the change message."""
    source = example_config_path.read_bytes()
    changed = source.replace(b"feed_length = 500", b"feed_length = 800")

    async def run() -> None:
        redis_a, redis_b = client_from_url(redis_url), client_from_url(redis_url)
        leader = ProgramRegistry(redis_a, Keys(prefix), ManualClock(AT_MS))
        follower = ProgramRegistry(redis_b, Keys(prefix), ManualClock(AT_MS))
        try:
            await leader.activate(source, "file:a")
            assert await follower.refresh() is True
            assert follower.current.program_version == 1
            # a long interval: only the pub/sub message (or the initial refresh) can bring the change
            follower.start_watching(interval_s=60)
            await leader.activate(changed, "api")

            async def until_version(n: int) -> None:
                while follower.current.program_version != n:
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(until_version(2), 5)
            assert follower.current.program.feed_length == 800
            assert follower.current.origin == "api"
            await leader.activate(source, "api")  # back to the first text: a new version, 3
            await asyncio.wait_for(until_version(3), 5)
            assert follower.current.program.feed_length == 500
        finally:
            await follower.stop_watching()
            await redis_a.aclose()
            await redis_b.aclose()

    asyncio.run(run())


def test_invalid_source_changes_nothing(redis_url: str, prefix: str, example_config_path: Path) -> None:
    """Invalid TOML or an invalid programme raises ConfigError and leaves the active version as it was."""
    source = example_config_path.read_bytes()

    async def run() -> None:
        redis = client_from_url(redis_url)
        try:
            keys = Keys(prefix)
            registry = ProgramRegistry(redis, keys, ManualClock(AT_MS))
            await registry.activate(source, "file:a")
            with pytest.raises(ConfigError) as info:
                await registry.activate(b"[program\nname = ", "api", file="posted.toml")
            assert [(p.file, p.path) for p in info.value.problems] == [("posted.toml", "")]
            with pytest.raises(ConfigError) as info:
                await registry.activate(source.replace(b"daily_cap = 5_000", b"daly_cap = 5_000"), "api")
            assert [(p.file, p.path) for p in info.value.problems] == [("<posted>", "rules.purchase_points.daly_cap")]
            assert registry.current.program_version == 1
            assert await redis.get(keys.config("active")) == b"1"
            assert await redis.get(keys.config("seq")) == b"1"
            other = ProgramRegistry(redis, keys, ManualClock(AT_MS))
            assert await other.refresh() is True
            assert other.current.program.source == source
        finally:
            await redis.aclose()

    asyncio.run(run())


def test_a_restart_keeps_a_posted_version_until_the_file_changes(redis_url: str, prefix: str, example_config_path: Path) -> None:
    """Start-up re-activates its file only if the file changed since it was last activated; a posted version survives restarts."""
    source = example_config_path.read_bytes()
    posted = source.replace(b"max_clock_skew_s = 300", b"max_clock_skew_s = 120")
    edited = source.replace(b"max_clock_skew_s = 300", b"max_clock_skew_s = 60")

    async def run() -> None:
        redis = client_from_url(redis_url)
        try:
            keys = Keys(prefix)
            assert (await ProgramRegistry(redis, keys, ManualClock(AT_MS)).activate(source, "file:a.toml")).program_version == 1
            assert (await ProgramRegistry(redis, keys, ManualClock(AT_MS)).activate(posted, "api")).program_version == 2
            restarted = await ProgramRegistry(redis, keys, ManualClock(AT_MS)).activate(source, "file:a.toml")
            assert (restarted.program_version, restarted.origin) == (2, "api")  # the posted version stays
            after_edit = await ProgramRegistry(redis, keys, ManualClock(AT_MS)).activate(edited, "file:a.toml")
            assert (after_edit.program_version, after_edit.program.skew_ms) == (3, 60_000)  # a changed file wins
        finally:
            await redis.aclose()

    asyncio.run(run())


def test_a_raised_retention_keeps_the_shorter_window_until_it_has_passed(redis_url: str, prefix: str, example_config_path: Path) -> None:
    """7 days, then 30: for the next 31 days (and the skew) events older than 7 days are refused (their dedupe
    entries may already be gone), so a retry 20 days after its event can never apply twice;
    a lowered retention takes effect at once."""
    source = example_config_path.read_bytes()
    week = source.replace(b"dedupe_retention_days = 14", b"dedupe_retention_days = 7")
    month = source.replace(b"dedupe_retention_days = 14", b"dedupe_retention_days = 30")
    assert week != source != month

    async def run() -> None:
        redis = client_from_url(redis_url)
        try:
            keys, clock = Keys(prefix), ManualClock(AT_MS)
            registry = ProgramRegistry(redis, keys, clock)
            await registry.activate(week, "api")
            clock.advance(DAY_MS)
            raised = await registry.activate(month, "api")
            assert raised.program.retention_ms == 30 * DAY_MS
            assert raised.window_ms(clock.now_ms()) == 7 * DAY_MS
            retry = {"id": "o-1", "member": "m-1", "type": "purchase", "at": AT_MS, "data": {"amount": 100}}
            now = AT_MS + 20 * DAY_MS
            with pytest.raises(EventOutOfWindow):
                parse_event(retry, raised.program, now, raised.window_ms(now))
            passed = AT_MS + DAY_MS + 31 * DAY_MS + raised.program.skew_ms  # raise + window + skew + a day
            assert raised.window_ms(passed - 1) == 7 * DAY_MS
            assert raised.window_ms(passed + 1) == 30 * DAY_MS
            # another process sees the same window
            other = ProgramRegistry(redis, keys, clock)
            assert await other.refresh() and other.current.window_ms(now) == 7 * DAY_MS
            clock.advance(DAY_MS)
            lowered = await registry.activate(week.replace(b"max_clock_skew_s = 300", b"max_clock_skew_s = 301"), "api")
            assert lowered.window_ms(clock.now_ms()) == 7 * DAY_MS
        finally:
            await redis.aclose()

    asyncio.run(run())
