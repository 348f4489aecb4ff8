"""Operations (admin): the outreach webhooks' dead list (``engine/outreach.py``).

``GET /v1/admin/webhooks/dead`` reads a page of the messages given up after their most attempts
(``?limit=`` 1 to 500, default 100; ``?after=`` the previous page's ``next``). ``POST
/v1/admin/webhooks/dead/replay`` with ``{"ids": [...]}`` (ids from that list) or ``{"all": true}``
moves them back to be delivered now, their attempts reset; the scheduler sends them on its next
tick. Admin key only; every parameter is checked before the first Redis call.
"""

from __future__ import annotations

import re
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from engine import ids, outreach
from engine.errors import InvalidInput
from realtime.errors import json_response
from realtime.http import read_json, service, store_failure
from realtime.replies import DeadWebhook, DeadWebhooksReply, ReplayReply

#: The most ids one replay names, and the body that carries them (an id is at most ~110 bytes).
REPLAY_MAX_IDS = 500
MAX_BODY = 65_536
DEFAULT_LIMIT = 100
_LIMIT = re.compile(r"[0-9]{1,4}")


async def get_dead(request: Request) -> Response:
    """``GET /v1/admin/webhooks/dead?limit=&after=`` -> ``{"messages": [...], "next"}``."""
    svc = service(request)
    svc.auth.admin(request.headers.get("authorization"))
    limit, after = parse_page(request.query_params.get("limit"), request.query_params.get("after"))
    try:
        page = await outreach.dead_messages(svc.pipeline, svc.keys, limit=limit, after=after)
    except (RedisError, OSError) as exc:
        raise store_failure(exc) from exc
    return json_response(DeadWebhooksReply(
        messages=[DeadWebhook(id=m.id, member=m.member, type=m.type, data=m.data, attempts=m.attempts,
                              dead_at_ms=m.dead_at_ms) for m in page.messages],
        next=page.next,
    ))


async def post_replay(request: Request) -> Response:
    """``POST /v1/admin/webhooks/dead/replay`` ``{"ids": [...]}`` or ``{"all": true}`` -> ``{"replayed", "more"}``."""
    svc = service(request)
    svc.auth.admin(request.headers.get("authorization"))
    chosen = parse_replay(await read_json(request, MAX_BODY))
    now_ms = svc.clock.now_ms()
    try:
        if chosen is None:
            replayed, more = await outreach.replay_all(svc.pipeline, svc.keys, now_ms)
        else:
            replayed, more = await outreach.replay(svc.pipeline, svc.keys, chosen, now_ms), False
    except (RedisError, OSError) as exc:
        raise store_failure(exc) from exc
    return json_response(ReplayReply(replayed=replayed, more=more))


def parse_page(limit: str | None, after: str | None) -> tuple[int, str | None]:
    """``?limit`` (1 to 500) and ``?after`` (a page's ``next``), or 422 naming the parameter."""
    count = DEFAULT_LIMIT
    if limit is not None:
        if _LIMIT.fullmatch(limit) is None or not 1 <= int(limit) <= outreach.PAGE_MAX:
            raise InvalidInput(f"must be a whole number from 1 to {outreach.PAGE_MAX}", field="limit")
        count = int(limit)
    if after is not None:
        try:
            outreach.parse_cursor(after)
        except ValueError:
            raise InvalidInput("must be the `next` of a previous page", field="after") from None
    return count, after


def parse_replay(raw: Any) -> list[str] | None:
    """The ids named, deduplicated in order; None for ``{"all": true}``. 422 naming the field."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"must be a JSON object, not {ids.kind_of(raw)}", field="body")
    for key in raw:
        if key not in ("ids", "all"):
            raise InvalidInput("unknown key (expected ids or all)", field=str(key))
    if len(raw) != 1:
        raise InvalidInput("give one of ids (a list of message ids) or all (true)", field="body")
    if "all" in raw:
        if raw["all"] is not True:
            raise InvalidInput(f"must be true (to replay every dead message), not {_shown(raw['all'])}", field="all")
        return None
    given = raw["ids"]
    if not isinstance(given, list):
        raise InvalidInput(f"must be an array of message ids, not {ids.kind_of(given)}", field="ids")
    if not 1 <= len(given) <= REPLAY_MAX_IDS:
        raise InvalidInput(f"must hold 1 to {REPLAY_MAX_IDS} message ids", field="ids")
    for i, value in enumerate(given):
        if not isinstance(value, str):
            raise InvalidInput(f"must be a message id (a string), not {ids.kind_of(value)}", field=f"ids[{i}]")
        try:
            outreach.check_delivery_id(value)
        except ValueError:
            raise InvalidInput("is not a webhook message id (the `id` of GET /v1/admin/webhooks/dead)",
                               field=f"ids[{i}]") from None
    return list(dict.fromkeys(given))


def _shown(value: Any) -> str:
    return "false" if value is False else ids.kind_of(value)
