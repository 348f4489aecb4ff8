"""Engine fixtures: the example programme, a fixed local noon, and the real award path on Valkey.

``engine`` opens the same stack the service assembles (Redis client, ``Scripts``,
``AutoPipeline``, ``OperationStore``) against the session's embedded Valkey, under this test's own
key prefix, and closes every client it opened.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest

from engine.awards import plan_award
from engine.operations import MemberPlan
from engine.config import CompiledProgram, compile_program, load_program, parse_program
from engine.events import parse_event
from engine.keys import Keys
from engine.cluster import Client, client_from_url, runner_for
from engine.scripts import Scripts
from engine.store import OpResult, OperationStore

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _compile_toml(text: str, file: str = "inline.toml") -> CompiledProgram:
    """Validate and compile a programme written inline in a test."""
    source = text.encode()
    return compile_program(parse_program(source, file), source)


def local_noon_ms() -> int:
    """Noon of the current local day in Asia/Shanghai: within a day of real time, so Valkey's
    field and key expiry (real time) never fires during a test, yet every day boundary is known."""
    today = datetime.now(SHANGHAI)
    return int(datetime(today.year, today.month, today.day, 12, tzinfo=SHANGHAI).timestamp() * 1000)


class Engine:
    """The award path of one test: parse -> plan -> one EVALSHA through the auto-pipeline."""

    def __init__(
        self, redis: Client, keys: Keys, program: CompiledProgram, now_ms: int, url: str, wait_replicas: int = 0
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.program = program
        self.now_ms = now_ms
        self.scripts = Scripts()
        self.pipeline = runner_for(redis, url, wait_replicas=wait_replicas, wait_timeout_ms=1000)
        self.store = OperationStore(self.pipeline, keys, self.scripts)

    def plan(
        self,
        event_id: str,
        member: str,
        type_: str,
        data: dict[str, Any] | None = None,
        *,
        at: object = None,
        now_ms: int | None = None,
        program: CompiledProgram | None = None,
    ) -> MemberPlan:
        program = program or self.program
        now = self.now_ms if now_ms is None else now_ms
        raw: dict[str, Any] = {"id": event_id, "member": member, "type": type_, "data": data or {}}
        if at is not None:
            raw["at"] = at
        return plan_award(program, parse_event(raw, program, now), now)

    async def apply(self, *args: Any, **kwargs: Any) -> OpResult:
        return await self.store.apply(self.plan(*args, **kwargs), kwargs.get("program") or self.program)

    async def profile(self, member: str) -> dict[str, str]:
        """The profile hash but ``nx`` (the soonest lot expiry: test_operations checks it) and
        ``la`` (the last activity: test_care checks it)."""
        raw = await self.redis.hgetall(self.keys.member(member).profile)
        return {k.decode(): v.decode() for k, v in raw.items() if k not in (b"nx", b"la")}

    async def balance(self, member: str) -> int:
        return int(await self.redis.hget(self.keys.member(member).profile, "pts") or 0)

    async def xp(self, member: str) -> int:
        return int(await self.redis.hget(self.keys.member(member).profile, "xp") or 0)

    async def ledger(self, member: str) -> list[tuple[int, int]]:
        """(delta, balance after) of every ledger entry, oldest first."""
        entries = await self.redis.xrange(self.keys.member(member).ledger)
        return [(int(f[b"d"]), int(f[b"b"])) for _, f in entries]

    async def coupons(self, member: str) -> list[str]:
        """The member's coupons' items in grant order (time, then the n of ``<op>:c<n>``)."""
        raw = await self.redis.hgetall(self.keys.member(member).coupons)
        records = [(msgpack.unpackb(r, raw=False), int(k.rpartition(b":c")[2])) for k, r in raw.items()]
        return [c[0] for c, _ in sorted(records, key=lambda pair: (pair[0][1], pair[1]))]


EngineFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def program(example_config_path) -> CompiledProgram:
    """The example programme, compiled once."""
    return load_program(example_config_path)


@pytest.fixture(scope="session")
def noon_ms() -> int:
    return local_noon_ms()


@pytest.fixture(scope="session")
def open_engine(redis_url: str, program: CompiledProgram, noon_ms: int) -> EngineFactory:
    """``async with open_engine(prefix) as e``: the award path under a key prefix of its own."""

    @asynccontextmanager
    async def _open(
        prefix: str | None = None,
        *,
        url: str | None = None,
        program_: CompiledProgram | None = None,
        now_ms: int | None = None,
        wait_replicas: int = 0,
    ) -> AsyncIterator[Engine]:
        redis = client_from_url(url or redis_url)
        engine = Engine(
            redis,
            Keys(prefix or f"t{uuid.uuid4().hex[:10]}"),
            program_ or program,
            noon_ms if now_ms is None else now_ms,
            url or redis_url,
            wait_replicas,
        )
        try:
            await engine.scripts.load(redis)
            yield engine
        finally:
            await engine.pipeline.aclose()
            await redis.aclose()

    return _open


@pytest.fixture
def engine(open_engine: EngineFactory, prefix: str) -> Callable[..., Any]:
    """``async with engine() as e``: ``open_engine`` under this test's prefix."""
    return lambda **kwargs: open_engine(prefix, **kwargs)


@pytest.fixture(scope="session")
def compile_toml() -> Callable[..., CompiledProgram]:
    """``compile_toml(text)``: a programme written inline in a test, validated and compiled."""
    return _compile_toml
