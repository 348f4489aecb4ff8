"""``GET /v1/stats`` (admin): the programme's KPIs over a range of days (``engine/kpis.py``).

``?from=YYYY-MM-DD&to=YYYY-MM-DD`` (the programme's local days, at most ``MAX_DAYS``; default: the
last 7 days to today) and ``?window=`` days (1 to 90, default 30) for churn and repurchase, which
compare the ``window`` days ending on ``to`` with the ``window`` days before them. Every figure
comes from per-day counters the operations maintain: the reads are a fixed number a day, whatever
the number of members.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from engine import kpis
from engine.errors import InvalidInput
from engine.plugins import installed
from realtime.errors import json_response
from realtime.http import service, store_failure
from realtime.replies import DayFigures, StatsReply, WindowFigures

MAX_DAYS = 92
DEFAULT_DAYS = 7
DEFAULT_WINDOW = 30


#: The first day a range may name: its windows reach 180 days before it, and no counter is older.
FIRST_DAY = date(2000, 1, 1)


def _day(value: str | None, field: str, default: date) -> date:
    if value is None:
        return default
    try:
        day = date.fromisoformat(value) if len(value) == 10 else _bad(field)
    except ValueError:
        return _bad(field)
    if day < FIRST_DAY:
        raise InvalidInput(f"must be a day from {FIRST_DAY.isoformat()} on", field=field)
    return day


def _bad(field: str) -> date:
    raise InvalidInput("must be a day, YYYY-MM-DD", field=field)


def parse_range(params: dict[str, str], today: date) -> tuple[date, date, int]:
    """(first day, last day, window days) of a stats request, checked before any read."""
    for key in params:
        if key not in ("from", "to", "window"):
            raise InvalidInput("unknown parameter (expected from, to, window)", field=key)
    last = _day(params.get("to"), "to", today)
    first = _day(params.get("from"), "from", last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        raise InvalidInput("must not be after `to`", field="from")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidInput(f"the range holds at most {MAX_DAYS} days", field="from")
    raw = params.get("window")
    if raw is None:
        window = DEFAULT_WINDOW
    elif raw.isdigit() and 1 <= int(raw) <= 90:
        window = int(raw)
    else:
        raise InvalidInput("must be a number of days from 1 to 90", field="window")
    return first, last, window


def _labels(first: date, days: int) -> list[str]:
    return [(first + timedelta(days=i)).strftime("%Y%m%d") for i in range(days)]


def _figures(window: int, before: int, again: int, *, churn: bool = False) -> WindowFigures:
    """Repurchase: the share of the earlier window's buyers who bought again; churn: the share of
    its active members who were not active again."""
    share = again / before if before else 0.0
    return WindowFigures(window_days=window, before=before, again=again,
                         rate=round((1 - share if before else 0.0) if churn else share, 4))


async def get_stats(request: Request) -> Response:
    svc = service(request)
    svc.auth.admin(request.headers.get("authorization"))
    program = svc.programs.current.program
    today = datetime.fromtimestamp(svc.clock.now_ms() / 1000, program.tz).date()
    first, last, window = parse_range(dict(request.query_params), today)
    games = [g.name for g in installed() if g.name in program.games]
    try:
        days = [await kpis.read_day(svc.redis, svc.keys, label, games) for label in _labels(first, (last - first).days + 1)]
        recent = _labels(last - timedelta(days=window - 1), window)
        earlier = _labels(last - timedelta(days=2 * window - 1), window)
        active = await kpis.members_between(svc.redis, svc.keys, "active", earlier, recent)
        buyers = await kpis.members_between(svc.redis, svc.keys, "buyers", earlier, recent)
        outstanding = await kpis.outstanding(svc.redis, svc.keys)
        dormant_now = await kpis.dormant_now(svc.redis, svc.keys)
    except (RedisError, OSError) as exc:
        raise store_failure(exc) from exc
    views = [DayFigures(**{**d, "day": f"{d['day'][:4]}-{d['day'][4:6]}-{d['day'][6:]}"}) for d in days]  # type: ignore[typeddict-item]
    return json_response(StatsReply(days=views, churn=_figures(window, *active, churn=True), repurchase=_figures(window, *buyers),
                                    points_outstanding=outstanding, dormant_now=dormant_now))
