"""Outreach webhooks on the real server, against a real local HTTP receiver: the outbox and its
delivery job, the signature (checked with docs/webhooks.md's own snippet), retries through a
receiver that fails, times out and recovers, the dead list and its replay, and a secret that never
reaches a log. Time is a ManualClock stepped past each retry; no test waits for a delay."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from engine import outreach
from engine.clock import ManualClock
from engine.jobs import SHARDS, dead_key, jobs_key, shard_of, tries_key
from engine.outreach import WEBHOOK, Deliveries, Message, enqueue
from engine.scheduler import Scheduler

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec-" + "7f3a9c" * 8  # 54 bytes: distinctive enough that finding it in a log is a leak

WEBHOOKS = """
[program]
name = "outreach"
timezone = "Asia/Shanghai"

[events.pay]
fields.cents = {{ type = "int", min = 1 }}

[rules.pay_points]
event = "pay"
grant = "points"
per = {{ field = "cents", every = 1, amount = 1 }}

[[tiers]]
id = "base"
name = "Base"
xp = 0
{webhooks}
"""


def webhooks_section(url: str, *, timeout_s: float = 0.3, max_attempts: int = 5, secret_env: str = "TEST_HOOK_SECRET") -> str:
    return (f'\n[webhooks]\nurl = "{url}"\nsecret_env = "{secret_env}"\ntimeout_s = {timeout_s}\n'
            f"max_attempts = {max_attempts}\n")


def documented_verifier() -> Callable[..., bool]:
    """``verify_rekindle`` exactly as docs/webhooks.md shows it to receivers."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    [snippet] = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify_rekindle" in block]
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "docs/webhooks.md", "exec"), namespace)
    return namespace["verify_rekindle"]  # type: ignore[no-any-return]


# --- a real HTTP receiver -------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]  # by lower-case name
    body: bytes
    answer: str  # "fail" (500), "hang" (no answer in time), "ok" (204)


@dataclass
class Receiver:
    """A local HTTP server in a thread that answers each POST by ``script`` (then ``then``):
    ``fail`` 500, ``hang`` nothing for ``hang_s`` (then 200, to a client long gone), ``ok`` 204."""

    url: str = ""
    script: list[str] = field(default_factory=list)
    then: str = "ok"
    hang_s: float = 5.0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)

    def next_answer(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else self.then

    def delivered(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.answer == "ok"]

    def all(self) -> list[Received]:
        with self.lock:
            return list(self.received)


@contextmanager
def receiver(script: list[str] | None = None, then: str = "ok") -> Iterator[Receiver]:
    state = Receiver(script=list(script or []), then=then)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            answer = state.next_answer()
            with state.lock:
                state.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body, answer))
            try:
                if answer == "hang":
                    state.released.wait(state.hang_s)
                    self.send_response(200)
                elif answer == "fail":
                    self.send_response(500)
                else:
                    self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:  # the client gave up on a hanging answer
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/rekindle?token=path-secret"
    try:
        yield state
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()
        thread.join()


# --- the engine side ------------------------------------------------------------------------------


@asynccontextmanager
async def outreach_of(e: Any, program: Any, clock: ManualClock, environ: Mapping[str, str] | None = None,
                      **kwargs: Any) -> AsyncIterator[Scheduler]:
    """A scheduler running webhook jobs as the service does, with small retry delays."""
    async with outreach.open_client() as client:
        deliveries = Deliveries(e.pipeline, e.keys, client, environ={"TEST_HOOK_SECRET": SECRET} if environ is None else environ)
        scheduler = Scheduler(
            e.pipeline, e.keys, e.scripts, e.store, clock, lambda: program, tasks={WEBHOOK: deliveries.run_job},
            tries_by_kind={WEBHOOK: outreach.max_attempts}, retry_first_ms=10, retry_longest_ms=40, **kwargs,
        )
        try:
            yield scheduler
        finally:
            await scheduler.stop()


def message(member: str = "m-42", kind: str = "birthday", occasion: str = "2026") -> Message:
    return Message(id=f"rk:care:{member}:{kind}-{occasion}", member=member, kind=kind,
                   data={"coupon": "bday-2026", "points": 500}, at_ms=1_700_000_000_000)


async def state(e: Any, m: Message) -> tuple[bytes | None, float | None, float | None, bytes | None]:
    """The message's outbox field, its job's due time, its dead-list time, its tries."""
    shard = shard_of(m.member)
    return (await e.redis.hget(outreach.outbox_key(e.keys, shard), m.delivery_id),
            await e.redis.zscore(jobs_key(e.keys, shard), m.delivery_id),
            await e.redis.zscore(dead_key(e.keys, shard), m.delivery_id),
            await e.redis.hget(tries_key(e.keys, shard), m.delivery_id))


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_delivered_once_after_the_receiver_fails_times_out_and_recovers(engine, compile_toml, caplog) -> None:
    """Enqueued twice (one job), the message meets a 500, then no answer within timeout_s, then a
    2xx: three attempts with one id, delivered once, its signature valid by the documented snippet;
    then the outbox holds it as delivered, no job is left, and enqueuing it again sends nothing."""
    verify = documented_verifier()
    caplog.set_level("DEBUG")

    async def run() -> None:
        with receiver(["fail", "hang"]) as hook:
            program = compile_toml(WEBHOOKS.format(webhooks=webhooks_section(hook.url)))
            async with engine(program_=program) as e, outreach_of(e, program, ManualClock(e.now_ms)) as scheduler:
                clock = scheduler._clock  # the ManualClock given
                m = message()
                assert await enqueue(e.pipeline, e.keys, m) is True
                assert await enqueue(e.pipeline, e.keys, m) is False
                raw, due, _, _ = await state(e, m)
                assert orjson.loads(raw)["id"] == m.id and due == m.at_ms
                delivered = counted("rekindle_webhook_deliveries_total", outcome="delivered")

                assert (await scheduler.tick()).failed == 1  # 500
                assert (await scheduler.tick()).failed == 0  # not due again yet
                clock.advance(40)  # type: ignore[attr-defined]
                assert (await scheduler.tick()).failed == 1  # no answer within 0.3 s
                clock.advance(40)  # type: ignore[attr-defined]
                assert (await scheduler.tick()).ran == 1  # recovered
                clock.advance(3_600_000)  # type: ignore[attr-defined]
                assert (await scheduler.tick()).ran == 0

                assert [r.answer for r in hook.all()] == ["fail", "hang", "ok"]
                [ok] = hook.delivered()
                assert {r.headers["rekindle-id"] for r in hook.all()} == {m.delivery_id}
                assert json.loads(ok.body) == {"id": m.delivery_id, "type": "birthday", "member": "m-42",
                                               "data": {"coupon": "bday-2026", "points": 500}, "at_ms": m.at_ms}
                assert ok.headers["content-type"] == "application/json"
                assert verify(SECRET.encode(), ok.body, ok.headers["rekindle-timestamp"], ok.headers["rekindle-signature"])
                assert not verify(b"another-secret-of-32-bytes......", ok.body, ok.headers["rekindle-timestamp"],
                                  ok.headers["rekindle-signature"])
                assert not verify(SECRET.encode(), ok.body + b" ", ok.headers["rekindle-timestamp"],
                                  ok.headers["rekindle-signature"])
                assert not verify(SECRET.encode(), ok.body, ok.headers["rekindle-timestamp"],
                                  ok.headers["rekindle-signature"], now=time.time() + 3600)  # a stale capture
                assert counted("rekindle_webhook_deliveries_total", outcome="delivered") == delivered + 1

                assert await state(e, m) == (b"", None, None, None)
                assert await enqueue(e.pipeline, e.keys, m) is False  # its occasion ran twice: still once
                clock.advance(3_600_000)  # type: ignore[attr-defined]
                await scheduler.run_due()
                assert len(hook.all()) == 3
        logged = caplog.text + "".join(str(r.args) for r in caplog.records)
        assert SECRET not in logged and "path-secret" not in logged
        assert "did not answer within 0.3 s" in caplog.text and "answered 500" in caplog.text

    asyncio.run(run())


def test_after_max_attempts_the_message_is_dead_listed_and_a_replay_delivers_it(engine, compile_toml) -> None:
    """A receiver that keeps failing: after max_attempts (3) the job is in the dead list, the
    message kept; the dead list shows it with its attempts; replayed, it is due now with its
    attempts reset, and delivered once the receiver recovers. A second replay finds nothing."""

    async def run() -> None:
        with receiver(then="fail") as hook:
            program = compile_toml(WEBHOOKS.format(webhooks=webhooks_section(hook.url, max_attempts=3)))
            async with engine(program_=program) as e:
                clock = ManualClock(e.now_ms)
                async with outreach_of(e, program, clock) as scheduler:
                    m = message("m-7", "points_expiring")
                    await enqueue(e.pipeline, e.keys, m, due_ms=e.now_ms)
                    dead_before = counted("rekindle_webhook_dead_letters_total")
                    for _ in range(2):
                        assert (await scheduler.tick()).failed == 1
                        clock.advance(40)
                    report = await scheduler.tick()
                    assert (report.failed, report.dead) == (0, 1)
                    assert counted("rekindle_webhook_dead_letters_total") == dead_before + 1
                    raw, due, dead_at, tries = await state(e, m)
                    assert raw and due is None and dead_at == clock.now_ms() and tries == b"3"
                    clock.advance(3_600_000)
                    assert (await scheduler.tick()).failed == 0  # never again by itself
                    assert len(hook.all()) == 3

                    page = await outreach.dead_messages(e.pipeline, e.keys)
                    assert page.next is None
                    assert page.messages == [outreach.DeadMessage(
                        m.delivery_id, "m-7", "points_expiring", {"coupon": "bday-2026", "points": 500}, 3,
                        clock.now_ms() - 3_600_000)]

                    hook.then = "ok"
                    assert await outreach.replay(e.pipeline, e.keys, [m.delivery_id], clock.now_ms()) == 1
                    assert (await state(e, m))[1:] == (clock.now_ms(), None, None)
                    assert (await outreach.dead_messages(e.pipeline, e.keys)).messages == []
                    assert (await scheduler.tick()).ran == 1
                    assert len(hook.delivered()) == 1 and hook.delivered()[0].headers["rekindle-id"] == m.delivery_id
                    assert await outreach.replay(e.pipeline, e.keys, [m.delivery_id], clock.now_ms()) == 0
                    assert await state(e, m) == (b"", None, None, None)

    asyncio.run(run())


def test_the_dead_list_pages_across_shards_in_order_and_replay_all_takes_every_one(engine, compile_toml) -> None:
    """60 dead messages over the shards, many given up in the same millisecond, beside dead jobs of
    another kind: pages of 7 list each webhook once, by (given up, id), and replay_all moves them
    all (in calls of at most ``most``), leaving the other kind's dead job alone."""

    async def run() -> None:
        program = compile_toml(WEBHOOKS.format(webhooks=""))
        async with engine(program_=program) as e:
            messages = [message(f"m-{i}", "dormant") for i in range(60)]
            for i, m in enumerate(messages):
                await enqueue(e.pipeline, e.keys, m)
                shard = shard_of(m.member)
                await e.redis.zrem(jobs_key(e.keys, shard), m.delivery_id)
                await e.redis.zadd(dead_key(e.keys, shard), {m.delivery_id: 1_000 + i % 4})
                await e.redis.hset(tries_key(e.keys, shard), m.delivery_id, 5)
            await e.redis.zadd(dead_key(e.keys, 0), {"rk:cross:x:y": 1_001})
            expected = sorted(((1_000 + i % 4, m.delivery_id) for i, m in enumerate(messages)),
                              key=lambda p: (p[0], p[1].encode()))
            seen: list[tuple[int, str]] = []
            after = None
            for _ in range(20):
                page = await outreach.dead_messages(e.pipeline, e.keys, limit=7, after=after)
                assert len(page.messages) <= 7
                seen += [(d.dead_at_ms, d.id) for d in page.messages]
                assert all(d.attempts == 5 and d.type == "dormant" for d in page.messages)
                if page.next is None:
                    break
                after = page.next
            assert seen == expected
            assert len({s for s in range(SHARDS) if any(shard_of(m.member) == s for m in messages)}) > 8

            assert await outreach.replay_all(e.pipeline, e.keys, 5_000, most=25) == (25, True)
            assert await outreach.replay_all(e.pipeline, e.keys, 5_000) == (35, False)
            assert (await outreach.dead_messages(e.pipeline, e.keys)).messages == []
            for m in messages:
                assert (await state(e, m))[1:] == (5_000, None, None)
            assert await e.redis.zscore(dead_key(e.keys, 0), "rk:cross:x:y") == 1_001

    asyncio.run(run())


def test_pages_stay_whole_when_a_shard_stops_reading_early(engine, compile_toml, monkeypatch) -> None:
    """With a shard's read cut short (SCAN_MAX 3) among many dead jobs of another kind, a page ends
    where the shortest read stopped, possibly empty but with a ``next``: following the cursors
    still lists every webhook exactly once, in order."""
    monkeypatch.setattr(outreach, "SCAN_MAX", 3)

    async def run() -> None:
        program = compile_toml(WEBHOOKS.format(webhooks=""))
        async with engine(program_=program) as e:
            messages = [message(f"m-{i}", "dormant") for i in range(12)]
            for i, m in enumerate(messages):
                await enqueue(e.pipeline, e.keys, m)
                shard = shard_of(m.member)
                await e.redis.zrem(jobs_key(e.keys, shard), m.delivery_id)
                await e.redis.zadd(dead_key(e.keys, shard), {m.delivery_id: 2_000 + i})
                await e.redis.zadd(dead_key(e.keys, shard), {f"rk:cross:o-{i}-{k}:1": 2_000 + i for k in range(5)})
            expected = [(2_000 + i, m.delivery_id) for i, m in enumerate(messages)]
            seen: list[tuple[int, str]] = []
            after, pages = None, 0
            while True:
                page = await outreach.dead_messages(e.pipeline, e.keys, limit=4, after=after)
                pages += 1
                assert pages < 100
                seen += [(d.dead_at_ms, d.id) for d in page.messages]
                if page.next is None:
                    break
                after = page.next
            assert seen == expected

    asyncio.run(run())


def test_without_webhooks_in_the_programme_a_message_is_dropped(engine, compile_toml, caplog) -> None:
    """No ``[webhooks]``: the delivery job finds nothing to send to, drops the message (logged),
    and the job is done: nothing retries it, and enqueuing it again is still a no-op."""

    async def run() -> None:
        program = compile_toml(WEBHOOKS.format(webhooks=""))
        async with engine(program_=program) as e:
            clock = ManualClock(e.now_ms)
            async with outreach_of(e, program, clock) as scheduler:
                m = message()
                await enqueue(e.pipeline, e.keys, m)
                assert (await scheduler.tick()).ran == 1
                assert await state(e, m) == (b"", None, None, None)
                assert await enqueue(e.pipeline, e.keys, m) is False
                assert await scheduler.run_due() == 0
        assert any(m.delivery_id in r.message and "no [webhooks]" in r.message for r in caplog.records)

    asyncio.run(run())


def test_a_missing_or_short_secret_or_no_receiver_fails_the_attempt_and_never_logs_the_secret(
        engine, compile_toml, caplog) -> None:
    """A secret shorter than 16 bytes, or none, sends nothing and fails the attempt with a line
    naming the variable, never its value; a receiver that refuses connections fails it too."""
    short = "short-hidden"  # 12 bytes

    async def run() -> None:
        with receiver() as hook:
            program = compile_toml(WEBHOOKS.format(webhooks=webhooks_section(hook.url)))
            async with engine(program_=program) as e:
                clock = ManualClock(e.now_ms)
                m = message()
                await enqueue(e.pipeline, e.keys, m)
                for environ in ({"TEST_HOOK_SECRET": short}, {}):
                    async with outreach_of(e, program, clock, environ) as scheduler:
                        assert (await scheduler.tick()).failed == 1
                    clock.advance(40)
                assert hook.all() == []
                assert int((await state(e, m))[3]) == 2
            closed = compile_toml(WEBHOOKS.format(webhooks=webhooks_section("http://127.0.0.1:9/nothing-listens")))
            async with engine(program_=closed) as e:
                clock = ManualClock(e.now_ms)
                await enqueue(e.pipeline, e.keys, message("m-9"))
                unreachable = counted("rekindle_webhook_deliveries_total", outcome="unreachable")
                async with outreach_of(e, closed, clock) as scheduler:
                    assert (await scheduler.tick()).failed == 1
                assert counted("rekindle_webhook_deliveries_total", outcome="unreachable") == unreachable + 1
        text = caplog.text
        assert "TEST_HOOK_SECRET" in text and "shorter than 16 bytes" in text and "is missing" in text
        assert "unreachable" in text
        assert short not in text and SECRET not in text

    asyncio.run(run())


def test_messages_and_ids_are_checked() -> None:
    """A message that is a caller's bug is refused before any call (ValueError); delivery ids and
    cursors are recognised exactly; the signature is HMAC-SHA256 over "<timestamp>.<body>"."""
    keys = None
    for bad in (Message("", "m-1", "birthday"), Message("x y", "m-1", "birthday"), Message("a", "m{1}", "birthday"),
                Message("a", "m-1", "no spaces"), Message("a", "m-1", "birthday", {"x": {1, 2}}),
                Message("a", "m-1", "birthday", at_ms=-1), Message("a", "m-1", "birthday", {"x": "y" * 20_000})):
        with pytest.raises(ValueError):
            outreach.enqueue_call(keys, bad)  # type: ignore[arg-type]
    m = message()
    assert re.fullmatch(r"rk:webhook:m-42:[0-9a-f]{32}", m.delivery_id)
    assert m.delivery_id == message().delivery_id != message(occasion="2027").delivery_id
    assert message("m-1").delivery_id != message("m-2").delivery_id
    assert outreach.check_delivery_id(m.delivery_id) == m.delivery_id
    for bad_id in ("rk:webhook:m-42:abc", "rk:expire:m-42:" + "a" * 32, "webhook:m-42:" + "a" * 32,
                   "rk:webhook:m{1}:" + "a" * 32, "rk:webhook:m-42:" + "A" * 32):
        with pytest.raises(ValueError):
            outreach.check_delivery_id(bad_id)
    cursor = outreach.cursor_of(123, m.delivery_id.encode())
    assert re.fullmatch(r"123\.[A-Za-z0-9_-]+", cursor)
    assert outreach.parse_cursor(cursor) == (123, m.delivery_id.encode())
    assert outreach.parse_cursor(outreach.cursor_of(5, b"x" * 900)) == (5, b"x" * 256)
    for bad_cursor in ("", "123", "123.", f"x.{cursor[4:]}", f"-1.{cursor[4:]}", f"123:{m.delivery_id}", "123.a",
                       "123.a+b/", "12345678901234567." + cursor[4:]):
        with pytest.raises(ValueError):
            outreach.parse_cursor(bad_cursor)
    import hashlib
    import hmac

    assert outreach.sign(b"k" * 16, 1700000000, b'{"a":1}') == "v1=" + hmac.new(
        b"k" * 16, b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert documented_verifier()(b"k" * 16, b'{"a":1}', "1700000000", outreach.sign(b"k" * 16, 1700000000, b'{"a":1}'),
                                 now=1700000100)
