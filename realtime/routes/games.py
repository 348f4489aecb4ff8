"""Every installed game's routes (``engine.plugins.Route``), served by one adapter.

A game declares its routes as data with handlers over a ``GameCall``; this module does what
every route of the service does around them, in one place: the credential the route names,
admission, the JSON body, the path parameters checked as ids, the error mapping, and the answer
of a member operation (``{"results": [...]}``, 409 for a refusal or a conflict).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from engine import ids
from engine.errors import NotFound, Refused
from engine.plugins import Answer, Game, GameCall, Route
from engine.store import OpStatus
from realtime.admission import Kind, admit, gate_of
from realtime.errors import json_response
from realtime.http import header, read_json, result_view, service, store_failure
from realtime.replies import ErrorBody, OperationReply

MAX_BODY = 4096
_PARAM = re.compile(r"{(\w+)}")


def starlette_routes(games: Sequence[Game]) -> list[StarletteRoute]:
    return [StarletteRoute(r.path, _endpoint(r), methods=[r.method.upper()]) for g in games for r in g.routes]


def _endpoint(route: Route) -> Callable[[Request], Awaitable[Response]]:
    names = _PARAM.findall(route.path)
    kind = Kind.AWARD if route.kind == "award" else Kind.READ

    async def endpoint(request: Request) -> Response:
        svc = service(request)
        authorization = request.headers.get("authorization")
        member = None
        if route.caller == "member":
            member = svc.auth.member(authorization)
        elif route.caller == "shop":
            svc.auth.shop(authorization)
        else:
            svc.auth.admin(authorization)
        params = {name: ids.check_id(request.path_params[name], name, ids.NAME_MAX) for name in names}
        body: Any = None
        length = header(request, b"content-length")
        if route.method == "post" and (header(request, b"transfer-encoding") or (length is not None and length != "0")):
            body = await read_json(request, MAX_BODY)  # no body at all is a body of None
        with admit(gate_of(request), kind):
            program = svc.programs.current.program
            call = GameCall(svc.games, member, params, body, program, svc.clock.now_ms())
            try:
                answer = await route.handler(call)
            except (RedisError, OSError) as exc:
                raise store_failure(exc) from exc
        return _respond(route, answer, member)

    endpoint.__name__ = route.operation_id
    return endpoint


def _respond(route: Route, answer: Answer, member: str | None) -> Response:
    if answer.operation is None:
        assert answer.body is not None
        return json_response(answer.body, answer.status)  # type: ignore[arg-type]  # a game's reply type
    op_id, result = answer.operation
    if result.status is OpStatus.REFUSED:
        if result.refusal == "not_found":
            raise NotFound("no such thing for this member", field="id")
        message, field = route.refusals.get(result.refusal, ("refused", "id"))
        raise Refused(result.refusal, message, field=field)
    view = result_view(op_id, member or "", result, "id")
    if result.status is OpStatus.CONFLICT:
        return json_response(ErrorBody(error=view["error"], results=[view]), 409)
    return json_response(OperationReply(results=[view]), answer.status)
