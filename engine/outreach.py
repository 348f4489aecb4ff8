"""Outreach: messages to the shop's backend ("your points expire in 7 days", "happy birthday",
"we miss you") as signed webhooks, through an outbox, retried, and kept for an operator when
they cannot be delivered. ``docs/webhooks.md`` is the receiver's side (the signature, with a
verification snippet).

The caller (a care-moment job) applies the member's plan, whose feed effect is the member's
side of the moment, and calls ``enqueue`` with a ``Message`` for the shop's side. ``enqueue``
writes the message to its member's scheduler shard, in one script call (``lua/outbox.lua``):
the message into the shard's outbox (a hash, ``<shard tag>:hooks``) and its delivery job
(kind ``webhook``) into the shard's job set. The job's id is derived from the member and the
message's id, so enqueuing a message twice (a job that ran twice) is enqueuing it once.

The delivery job is a scheduler ``Task`` (``Deliveries.run_job``, registered by the service):
it POSTs the message to the active programme's ``[webhooks] url`` with the signature headers,
and

- a 2xx answer: delivered. The message's outbox field is emptied (kept empty for
  ``SENT_KEEP_MS``, so enqueuing it again even after its delivery is still a no-op), then the
  scheduler removes the job;
- any other answer, a timeout (``timeout_s``, for the whole attempt), a connection error, or a
  signing secret missing: the job fails, and the scheduler retries it with exponential backoff
  and jitter (``engine/scheduler.py``); after ``max_attempts`` attempts it goes to the shard's
  dead list with the message kept in the outbox: ``GET /v1/admin/webhooks/dead`` lists them and
  ``POST /v1/admin/webhooks/dead/replay`` sends them again (``dead_messages``, ``replay``);
- no ``[webhooks]`` in the active programme: the message is dropped (logged, counted), as if
  delivered. A programme without webhooks sends its moments to the live feed only; holding the
  messages until webhooks are configured would send a backlog of stale "happy birthday"s then.

A crash loses none: a message leaves the outbox only once delivered or dropped, and its job
only after that. A crash between the delivery and the emptying sends it again, so delivery is
at least once and a receiver dedupes on the message's ``id`` (the same on every attempt and
replay).

The signature (``sign``) is Stripe's scheme: ``Rekindle-Signature: v1=<hex HMAC-SHA256 of
"<timestamp>.<body>">`` with the timestamp (unix seconds, wall time: what the receiver compares
with its own clock) in ``Rekindle-Timestamp``. The secret is read from the environment variable
the programme names (``secret_env``), at each attempt: never from the programme (programmes are
stored and shown), and never written to a log or an error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
import orjson
from prometheus_client import Counter

from engine import ids
from engine.clock import DAY_MS
from engine.config import CompiledProgram
from engine.errors import InvalidInput
from engine.jobs import SHARDS, Job, dead_key, job_id, jobs_key, parse_job, shard_of, tries_key
from engine.keys import Keys
from engine.runner import Call, Runner
from engine.scripts import LuaScript

log = logging.getLogger("rekindle.outreach")

#: The delivery job's kind: ``rk:webhook:<member>:<digest of the message id>``.
WEBHOOK = "webhook"
#: A delivered (or dropped) message's outbox field stays, empty, this long: enqueuing the message
#: again within it is a no-op. Real time (a field expiry).
SENT_KEEP_MS = 7 * DAY_MS
#: The least a signing secret may be, in bytes (the environment variable's value, UTF-8).
SECRET_MIN_BYTES = 16
#: Attempts of a webhook job when the programme has no ``[webhooks]`` (it is then dropped at its
#: first attempt; this bounds one whose outbox cannot even be read).
DEFAULT_MAX_ATTEMPTS = 12
#: The most a message's ``data`` may take, as JSON.
DATA_MAX_BYTES = 16_384
#: The dead list's pages: at most this many messages per page; a page reads at most this many
#: dead entries per shard besides.
PAGE_MAX = 500
SCAN_MAX = 2_000
#: A replay of every dead message moves at most this many per call; the answer says if more wait.
REPLAY_ALL_MAX = 10_000

ID_HEADER = "Rekindle-Id"
TIMESTAMP_HEADER = "Rekindle-Timestamp"
SIGNATURE_HEADER = "Rekindle-Signature"
SIGNATURE_VERSION = "v1"

DELIVERIES = Counter(
    "rekindle_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered (2xx), rejected (another status), timeout, unreachable "
    "(connection error), no_secret (the signing secret missing or too short), dropped (no [webhooks])",
    ["outcome"],
)
DEAD_LETTERS = Counter("rekindle_webhook_dead_letters", "Webhook messages given up at their most attempts (the dead list)")
REPLAYED = Counter("rekindle_webhook_replayed", "Dead webhook messages an operator sent again")

#: The outbox script; ``Scripts.outbox`` is the same file (loaded and checked at start-up with the others).
OUTBOX = LuaScript.from_package("outbox.lua", with_lib=True)


@dataclass(frozen=True, slots=True)
class Message:
    """One message to the shop's backend about one member.

    ``id`` is the message's idempotency key: derive it from the occasion that sends it (the care
    moment's job or operation id, ``rk:birthday:m-42:2026``), so that the occasion run twice
    enqueues it once. It is unique per member (the delivery's id, on the wire, adds the member).
    ``kind`` names the message for the receiver (``"points_expiring"``, ``"birthday"``,
    ``"dormant"`` ...: any name), ``data`` is what it needs (JSON: a dict of strings, numbers,
    booleans, lists and dicts, at most ``DATA_MAX_BYTES``), ``at_ms`` when the occasion happened.
    """

    id: str
    member: ids.MemberId
    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)
    at_ms: int = 0

    @property
    def delivery_id(self) -> str:
        """The delivery job's id, which is also the message's ``id`` on the wire."""
        return delivery_id(self.member, self.id)

    def record(self) -> bytes:
        """What the outbox holds (checked: raises ValueError for a message that is a caller's bug)."""
        _check(self.id, "id", ids.DERIVED_ID_MAX)
        _check(self.kind, "kind", ids.NAME_MAX)
        _check(self.member, "member", ids.MEMBER_ID_MAX)
        if not isinstance(self.at_ms, int) or isinstance(self.at_ms, bool) or not 0 <= self.at_ms < 2**53:
            raise ValueError(f"message {self.id!r}: at_ms must be epoch milliseconds")
        if not isinstance(self.data, Mapping):
            raise ValueError(f"message {self.id!r}: data must be a mapping")
        try:
            record = orjson.dumps({"id": self.id, "member": self.member, "type": self.kind, "data": dict(self.data),
                                   "at_ms": self.at_ms})
        except TypeError as exc:
            raise ValueError(f"message {self.id!r}: data is not JSON: {exc}") from None
        if len(record) > DATA_MAX_BYTES + 1024:
            raise ValueError(f"message {self.id!r}: data is larger than {DATA_MAX_BYTES} bytes as JSON")
        return record


def _check(value: object, what: str, max_len: int) -> None:
    try:
        ids.check_id(value, what, max_len)
    except InvalidInput as exc:
        raise ValueError(f"message {what} {value!r}: {exc}") from None


def delivery_id(member: str, message_id: str) -> str:
    """``rk:webhook:<member>:<32 hex digits of sha256(message id)>``: unique across members, and
    the job id the member's shard holds the delivery under."""
    return job_id(WEBHOOK, member, hashlib.sha256(message_id.encode()).hexdigest()[:32])


def outbox_key(keys: Keys, shard: int) -> str:
    """The shard's outbox: hash, delivery job id -> the message's JSON ("" once delivered)."""
    return keys.schedule(shard) + ":hooks"


def _keys(keys: Keys, shard: int) -> list[str]:
    return [outbox_key(keys, shard), jobs_key(keys, shard), tries_key(keys, shard), dead_key(keys, shard)]


def enqueue_call(keys: Keys, message: Message, due_ms: int | None = None) -> Call:
    """The call ``enqueue`` makes, for a caller that chains it with others (``Runner.run_chain``)."""
    record = message.record()
    due = message.at_ms if due_ms is None else due_ms
    return OUTBOX, _keys(keys, shard_of(message.member)), ["put", message.delivery_id, record, int(due)]


async def enqueue(runner: Runner, keys: Keys, message: Message, *, due_ms: int | None = None) -> bool:
    """Put ``message`` in its member's outbox and schedule its delivery at ``due_ms`` (default:
    ``message.at_ms``, so at once for an occasion that happened), atomically: one script call in
    the member's scheduler shard. Idempotent: True if the message is new; False if the outbox
    already has it (waiting, in the dead list, or delivered within ``SENT_KEEP_MS``), when
    nothing changes. Raises ValueError for a malformed message (a bug of the caller's), and the
    store's error if the call failed (then nothing was written: call again)."""
    return int(await runner.call(*enqueue_call(keys, message, due_ms))) == 1


def max_attempts(program: CompiledProgram) -> int:
    """The webhook job's most attempts under ``program`` (the scheduler's ``tries_by_kind``)."""
    hooks = program.model.webhooks
    return hooks.max_attempts if hooks is not None else DEFAULT_MAX_ATTEMPTS


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Rekindle-Signature`` value: ``v1=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


class WebhookFailed(Exception):
    """One attempt failed: the scheduler retries the job (its message never holds the secret)."""


def _where(url: str) -> str:
    """A URL as logs may show it: scheme and host, never the path or query (which may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


class Deliveries:
    """The ``webhook`` job kind: one attempt at delivering one message (see the module's docstring).

    ``client`` is the process's shared ``httpx.AsyncClient`` (the service opens and closes it);
    ``environ`` is where the signing secret is read from; ``wall`` the signature's clock (unix
    seconds, the real time a receiver checks the timestamp against, whatever the scheduler's
    clock says)."""

    def __init__(
        self,
        runner: Runner,
        keys: Keys,
        client: httpx.AsyncClient,
        *,
        environ: Mapping[str, str] = os.environ,
        wall: Callable[[], float] = time.time,
        keep_ms: int = SENT_KEEP_MS,
    ) -> None:
        self._runner = runner
        self._keys = keys
        self._client = client
        self._environ = environ
        self._wall = wall
        self._keep_ms = keep_ms

    async def run_job(self, job: Job, program: CompiledProgram, now_ms: int) -> None:
        keys = _keys(self._keys, shard_of(job.member))
        raw, tries = await self._runner.call(OUTBOX, keys, ["load", job.id])
        if not raw:
            log.info("webhook %s: nothing to deliver (delivered or dropped before)", job.id)
            return
        record = orjson.loads(raw)
        hooks = program.model.webhooks
        if hooks is None:
            DELIVERIES.labels("dropped").inc()
            log.warning("webhook %s (%s, member %s) dropped: the active programme has no [webhooks]",
                        job.id, record.get("type"), job.member)
            await self._runner.call(OUTBOX, keys, ["done", job.id, self._keep_ms])
            return
        attempt = int(tries or 0) + 1
        last = attempt >= hooks.max_attempts
        try:
            await self._attempt(job, record, hooks.url, hooks.secret_env, hooks.timeout_s)
        except WebhookFailed as exc:
            if last:
                DEAD_LETTERS.inc()
                log.error("webhook %s failed its last attempt (%d of %d): %s; it goes to the dead list "
                          "(GET /v1/admin/webhooks/dead, replay with POST /v1/admin/webhooks/dead/replay)",
                          job.id, attempt, hooks.max_attempts, exc)
            else:
                log.warning("webhook %s attempt %d of %d failed: %s; retried later", job.id, attempt,
                            hooks.max_attempts, exc)
            raise
        # Delivered: emptied before the job is removed (a crash between the two sends it again).
        await self._runner.call(OUTBOX, keys, ["done", job.id, self._keep_ms])
        log.info("webhook %s delivered to %s (attempt %d)", job.id, _where(hooks.url), attempt)

    async def _attempt(self, job: Job, record: Mapping[str, Any], url: str, secret_env: str, timeout_s: float) -> None:
        secret = self._environ.get(secret_env, "").encode()
        if len(secret) < SECRET_MIN_BYTES:
            DELIVERIES.labels("no_secret").inc()
            raise WebhookFailed(f"not sent: the signing secret (environment variable {secret_env}) is "
                                f"{'missing' if not secret else 'shorter than %d bytes' % SECRET_MIN_BYTES}")
        body = orjson.dumps({"id": job.id, "type": record["type"], "member": record["member"],
                             "data": record["data"], "at_ms": record["at_ms"]})
        timestamp = int(self._wall())
        headers = {
            "content-type": "application/json",
            "user-agent": "rekindle-webhooks/1",
            ID_HEADER: job.id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        where = _where(url)
        try:
            # The whole attempt (connecting, sending, the answer's head) within timeout_s; the
            # answer's body is never read.
            async with asyncio.timeout(timeout_s):
                async with self._client.stream("POST", url, content=body, headers=headers, timeout=timeout_s) as reply:
                    status = reply.status_code
        except (TimeoutError, httpx.TimeoutException):
            DELIVERIES.labels("timeout").inc()
            raise WebhookFailed(f"{where} did not answer within {timeout_s:g} s") from None
        except (httpx.HTTPError, OSError) as exc:
            DELIVERIES.labels("unreachable").inc()
            raise WebhookFailed(f"{where} unreachable ({type(exc).__name__})") from None
        if not 200 <= status < 300:
            DELIVERIES.labels("rejected").inc()
            raise WebhookFailed(f"{where} answered {status}")
        DELIVERIES.labels("delivered").inc()


def open_client() -> httpx.AsyncClient:
    """The process's client for webhooks: no redirects followed (a 3xx is a failed attempt),
    connections kept alive for the next messages. httpx logs every request's full URL at INFO,
    query included, where a shop may keep a token: its logger is held to warnings."""
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
    return httpx.AsyncClient(follow_redirects=False,
                             limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))


# --- the dead list, for an operator ---------------------------------------------------------------


class DeadMessage(NamedTuple):
    id: str  # the delivery's id (the job's, and the message's on the wire)
    member: str
    type: str | None  # None: the outbox no longer holds the message
    data: dict[str, Any] | None
    attempts: int
    dead_at_ms: int


class DeadPage(NamedTuple):
    messages: list[DeadMessage]
    next: str | None  # the cursor of the next page; None: this was the last


#: A cursor's job id is cut to this many bytes: a webhook's id is far shorter, and a longer job of
#: another kind (a malformed id) found again by the next page is read past again, not listed.
CURSOR_JOB_MAX = 256
CURSOR = re.compile(r"([0-9]{1,16})\.([A-Za-z0-9_-]{1,342})")


def cursor_of(dead_at_ms: int, job: bytes) -> str:
    """A position in the dead lists' order, opaque to the caller: ``<dead_at_ms>.<base64url of the
    job id>`` (any job's: a page may end where a shard stopped reading, at another kind's job)."""
    return f"{dead_at_ms}.{base64.urlsafe_b64encode(job[:CURSOR_JOB_MAX]).rstrip(b'=').decode()}"


def parse_cursor(value: str) -> tuple[int, bytes]:
    """A cursor as ``dead_messages`` answered it; ValueError for anything else."""
    found = CURSOR.fullmatch(value)
    if found is None:
        raise ValueError("not a cursor of this list")
    encoded = found.group(2)
    try:
        job = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except ValueError:
        raise ValueError("not a cursor of this list") from None
    if not job or len(job) > CURSOR_JOB_MAX:
        raise ValueError("not a cursor of this list")
    return int(found.group(1)), job


def check_delivery_id(value: str) -> str:
    """``value`` if it is a webhook delivery's id (a dead list's ``id``), else ValueError."""
    if len(value) > ids.DERIVED_ID_MAX or not value.startswith(f"{ids.DERIVED_PREFIX}{WEBHOOK}:"):
        raise ValueError("not a webhook message id")
    try:
        ids.check_id(value, "id", ids.DERIVED_ID_MAX)
        job = parse_job(value, 0)
        ids.member_id(job.member)
    except (InvalidInput, ValueError):
        raise ValueError("not a webhook message id") from None
    if job.kind != WEBHOOK or len(job.param) != 32 or any(c not in "0123456789abcdef" for c in job.param):
        raise ValueError("not a webhook message id")
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def dead_messages(runner: Runner, keys: Keys, *, limit: int = 100, after: str | None = None) -> DeadPage:
    """The dead webhook messages, oldest given up first (then by id), ``limit`` at most, after
    the cursor ``after`` (a page's ``next``). Read one call per shard."""
    if not 1 <= limit <= PAGE_MAX:
        raise ValueError(f"limit must be 1 to {PAGE_MAX}")
    after_ms, after_job = parse_cursor(after) if after else (0, b"")
    prefix = f"{ids.DERIVED_PREFIX}{WEBHOOK}:"
    calls: list[Call] = [(OUTBOX, _keys(keys, s), ["list", after_ms, after_job, limit, SCAN_MAX, prefix])
                         for s in range(SHARDS)]
    found: list[tuple[int, bytes, DeadMessage]] = []
    boundary: tuple[int, bytes] | None = None  # the least position a shard stopped reading at
    for reply in await runner.run_many(calls):
        if isinstance(reply, Exception):
            raise reply
        *entries, ended, last_ms, last_job = reply
        for job_raw, when, raw, tries in entries:
            job = _text(job_raw)
            record = orjson.loads(raw) if raw else None
            found.append((int(when), job.encode(), DeadMessage(
                job, parse_job(job, 0).member, record["type"] if record else None,
                record["data"] if record else None, int(tries or 0), int(when))))
        if not int(ended):
            stop = (int(last_ms), last_job if isinstance(last_job, bytes) else last_job.encode())
            boundary = stop if boundary is None or stop < boundary else boundary
    found.sort(key=lambda f: (f[0], f[1]))
    if boundary is not None:  # past where a shard stopped reading, another shard's could be missed
        found = [f for f in found if (f[0], f[1]) <= boundary]
    page = [f[2] for f in found[:limit]]
    if len(found) > limit:
        nxt: str | None = cursor_of(page[-1].dead_at_ms, page[-1].id.encode())
    elif boundary is not None:
        nxt = cursor_of(*boundary)
    else:
        nxt = None
    return DeadPage(page, nxt)


async def replay(runner: Runner, keys: Keys, delivery_ids: Sequence[str], now_ms: int) -> int:
    """Move the dead messages named (delivery ids, checked by ``check_delivery_id``) back to
    their job sets, due at ``now_ms``, their attempts reset. How many were dead (an id not on a
    dead list is left alone: delivered, replayed already, or never dead)."""
    by_shard: dict[int, list[str]] = {}
    for job in dict.fromkeys(delivery_ids):
        by_shard.setdefault(shard_of(parse_job(job, 0).member), []).append(job)
    calls: list[Call] = [(OUTBOX, _keys(keys, s), ["replay", int(now_ms), *jobs]) for s, jobs in sorted(by_shard.items())]
    moved = 0
    for reply in await runner.run_many(calls):
        if isinstance(reply, Exception):
            raise reply
        moved += int(reply)
    if moved:
        REPLAYED.inc(moved)
        log.warning("webhooks: %d dead message(s) replayed by an operator", moved)
    return moved


async def replay_all(runner: Runner, keys: Keys, now_ms: int, *, most: int = REPLAY_ALL_MAX) -> tuple[int, bool]:
    """Every dead webhook message back to due at ``now_ms`` (up to ``most``): (how many moved,
    whether more wait, for another call)."""
    moved = 0
    after: str | None = None
    while moved < most:
        page = await dead_messages(runner, keys, limit=min(PAGE_MAX, most - moved), after=after)
        if page.messages:
            moved += await replay(runner, keys, [m.id for m in page.messages], now_ms)
        if page.next is None:
            return moved, False
        after = page.next
    return moved, True
