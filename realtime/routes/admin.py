"""Operations (admin): the dev clock. Thin handlers: authenticate, parse, act, answer.

``GET`` and ``POST /v1/admin/clock`` exist only on a service started with ``--dev-clock`` (the
app adds the routes then, and only then: elsewhere they are a 404 like any unknown path). GET
reads the clock. POST moves it forward, no later than ``engine.clock.LATEST_MS`` (past it the
calendar's dates leave what datetime holds), then runs the scheduler until nothing is due before
answering, so a rehearsal or a test sees every consequence of the jump (points expired, care
moments granted) in its next call.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from engine import ids
from engine.clock import LATEST_ISO, LATEST_MS, SettableClock
from engine.errors import InvalidInput, NotFound
from realtime.http import read_json, service, store_failure
from realtime.errors import json_response
from realtime.replies import ClockReply

MAX_BODY = 1024
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


async def get_clock(request: Request) -> Response:
    """``GET /v1/admin/clock`` -> ``{"now", "now_ms", "jobs_run": 0}``: the clock in UTC; it runs no job."""
    svc = service(request)
    svc.auth.admin(request.headers.get("authorization"))
    now_ms = dev_clock(request).now_ms()
    return json_response(ClockReply(now=iso(now_ms, EPOCH), now_ms=now_ms, jobs_run=0))


async def post_clock(request: Request) -> Response:
    """``POST /v1/admin/clock`` ``{"now": "2027-01-01T00:00:00+08:00"}`` -> ``{"now", "now_ms", "jobs_run"}``."""
    svc = service(request)
    svc.auth.admin(request.headers.get("authorization"))
    clock = dev_clock(request)
    moment = parse_now(await read_json(request, MAX_BODY))
    now_ms = epoch_ms(moment)
    current_ms = clock.now_ms()
    if now_ms < current_ms:
        raise InvalidInput(f"must not be earlier than the service's clock ({iso(current_ms, moment)}): it only moves forward", field="now")
    if now_ms > LATEST_MS:
        raise InvalidInput(f"must not be later than {LATEST_ISO}, the latest time every date the engine computes "
                           "(lot expiry, local days and weeks) supports", field="now")
    clock.set(now_ms)
    try:
        ran = await svc.scheduler.run_due()
    except (RedisError, OSError) as exc:
        raise store_failure(exc) from exc
    return json_response(ClockReply(now=iso(now_ms, moment), now_ms=now_ms, jobs_run=ran))


def dev_clock(request: Request) -> SettableClock:
    """The service's settable clock; 404 on a service without ``--dev-clock`` (a second guard: the
    app adds these routes only with it)."""
    svc = service(request)
    clock = svc.clock
    if not svc.settings.dev_clock or not isinstance(clock, SettableClock):
        raise NotFound("this service was not started with --dev-clock", field="path")
    return clock


def parse_now(raw: object) -> datetime:
    """``{"now": ISO-8601 with a UTC offset}``: a moment, never a wall time of unknown zone."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"must be a JSON object, not {ids.kind_of(raw)}", field="body")
    for key in raw:
        if key != "now":
            raise InvalidInput("unknown key (expected now)", field=str(key))
    value = raw.get("now")
    if not isinstance(value, str):
        raise InvalidInput(f"is required: an ISO-8601 time with a UTC offset, not {ids.kind_of(value)}", field="now")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput("must be an ISO-8601 time such as 2027-01-01T00:00:00+08:00", field="now") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput("must carry a UTC offset (+08:00 or Z)", field="now")
    return moment


def epoch_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def iso(ms: int, like: datetime) -> str:
    """``ms`` in the offset the caller wrote, to the millisecond."""
    return (EPOCH + timedelta(milliseconds=ms)).astimezone(like.tzinfo).isoformat(timespec="milliseconds")
