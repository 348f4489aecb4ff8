"""Dry runs on the real server: the real member script on scratch copies that no one else ever sees
and that cannot outlive the call, whatever happens to the process."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.dryrun import DryRun
from engine.store import OpStatus


async def scratch_keys(e: Any) -> list[str]:
    """Every key under the test's prefix that is a dry run's copy (``<member tag>:x<hex>:...``)."""
    return [k.decode() async for k in e.redis.scan_iter(match=f"{e.keys.prefix}:*:x*", count=1000)]


def test_a_dry_run_answers_without_writing(engine) -> None:
    """The dry run's effects are what applying then gives; the member's keys are unchanged and
    no copy is left."""

    async def run() -> None:
        async with engine() as e:
            dry = DryRun(e.redis, e.keys, e.scripts)
            await e.apply("p-0", "m-1", "purchase", {"amount": 5000})
            before = {k: await e.redis.dump(k) async for k in e.redis.scan_iter(match=f"{e.keys.prefix}:*")}
            plan = e.plan("p-1", "m-1", "purchase", {"amount": 30_000})
            would = await dry.apply(plan, e.program)
            assert would.status is OpStatus.APPLIED and would.effects
            after = {k: await e.redis.dump(k) async for k in e.redis.scan_iter(match=f"{e.keys.prefix}:*")}
            assert after == before
            assert await scratch_keys(e) == []
            real = await e.apply("p-1", "m-1", "purchase", {"amount": 30_000})
            assert [x["type"] for x in would.effects] == [x["type"] for x in real.effects]

    asyncio.run(run())


def test_no_other_client_ever_sees_a_scratch_copy(engine) -> None:
    """While 200 dry runs (a first one for each member, so the script creates keys the copies did
    not have) go on, a second client scanning all the time never finds a copy: copy, script and
    delete run as one transaction, so a process killed at any moment leaves nothing behind (an
    expiry on the copies could not cover the keys the script creates)."""

    async def run() -> None:
        async with engine() as e:
            dry = DryRun(e.redis, e.keys, e.scripts)
            seen: list[str] = []
            done = asyncio.Event()

            async def scan() -> None:
                while not done.is_set():
                    seen.extend(await scratch_keys(e))
                    await asyncio.sleep(0)

            async def dry_runs() -> None:
                try:
                    for i in range(200):
                        await dry.apply(e.plan(f"p-{i}", f"m-{i}", "purchase", {"amount": 5000}), e.program)
                finally:
                    done.set()

            await asyncio.gather(scan(), dry_runs())
            assert seen == []
            assert await scratch_keys(e) == []

    asyncio.run(run())


def test_a_dry_run_survives_a_script_flush(engine) -> None:
    """A server that lost its scripts answers the dry run all the same (loaded, then run again),
    and leaves no copy after the failed first attempt."""

    async def run() -> None:
        async with engine() as e:
            dry = DryRun(e.redis, e.keys, e.scripts)
            await e.redis.script_flush()
            would = await dry.apply(e.plan("p-1", "m-1", "purchase", {"amount": 5000}), e.program)
            assert would.status is OpStatus.APPLIED
            assert await scratch_keys(e) == []

    asyncio.run(run())
