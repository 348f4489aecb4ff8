"""Operations (admin): the dev clock. Thin handlers: authenticate, parse, act, answer.

``POST /v1/admin/clock`` exists only on a service started with ``--dev-clock`` (the app adds
the route then, and only then: elsewhere it is a 404 like any unknown path). It moves the clock
forward, then runs the scheduler until nothing is due before answering, so a rehearsal or a
test sees every consequence of the jump (points expired, care moments granted) in its next call.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from engine import ids
from engine.clock import SettableClock
from engine.errors import InvalidInput, NotFound
from realtime.api import read_json, service, store_failure
from realtime.errors import json_response
from realtime.replies import ClockReply

MAX_BODY = 1024
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


async def post_clock(request: Request) -> Response:
    """``POST /v1/admin/clock`` ``{"now": "2027-01-01T00:00:00+08:00"}`` -> ``{"now", "now_ms", "jobs_run"}``."""
    svc = service(request)
    svc.auth.admin(request.headers.get("authorization"))
    clock = svc.clock
    if not svc.settings.dev_clock or not isinstance(clock, SettableClock):
        raise NotFound("this service was not started with --dev-clock", field="path")
    moment = parse_now(await read_json(request, MAX_BODY))
    now_ms = epoch_ms(moment)
    current_ms = clock.now_ms()
    if now_ms < current_ms:
        raise InvalidInput(f"must not be earlier than the service's clock ({iso(current_ms, moment)}): it only moves forward", field="now")
    clock.set(now_ms)
    try:
        ran = await svc.scheduler.run_due()
    except (RedisError, OSError) as exc:
        raise store_failure(exc) from exc
    return json_response(ClockReply(now=iso(now_ms, moment), now_ms=now_ms, jobs_run=ran))


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
    if not 1970 <= moment.year <= 9998:
        raise InvalidInput("must lie between the years 1970 and 9998", field="now")
    return moment


def epoch_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def iso(ms: int, like: datetime) -> str:
    """``ms`` in the offset the caller wrote, to the millisecond."""
    return (EPOCH + timedelta(milliseconds=ms)).astimezone(like.tzinfo).isoformat(timespec="milliseconds")
