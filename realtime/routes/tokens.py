"""Member tokens (shop): ``POST /v1/tokens`` mints the credential the member app holds. Writes
nothing and takes no admission ticket: never shed under load."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from engine import ids
from engine.errors import InvalidInput
from realtime.errors import json_response
from realtime.http import read_json, service
from realtime.replies import TokenReply

MAX_TOKEN_TTL_S = 30 * 24 * 3600


async def post_token(request: Request) -> Response:
    svc = service(request)
    svc.auth.shop(request.headers.get("authorization"))
    body = await read_json(request, 4096)
    if not isinstance(body, dict):
        raise InvalidInput(f"must be a JSON object, not {ids.kind_of(body)}", field="body")
    for key in body:
        if key not in ("member", "ttl_s"):
            raise InvalidInput("unknown key (expected member, ttl_s)", field=str(key))
    member = ids.member_id(body.get("member"), "member")
    ttl_s = ids.whole(body.get("ttl_s", svc.settings.token_ttl_s))
    if ttl_s is None or ttl_s < 60:
        raise InvalidInput(f"must be an integer from 60 to {MAX_TOKEN_TTL_S}", field="ttl_s")
    if ttl_s > MAX_TOKEN_TTL_S:
        raise InvalidInput(f"is above the maximum, {MAX_TOKEN_TTL_S} s", field="ttl_s")
    token, expires_ms = svc.auth.mint(member, svc.clock.now_ms(), ttl_s)
    return json_response(TokenReply(member=member, token=token, expires_at_ms=expires_ms))
