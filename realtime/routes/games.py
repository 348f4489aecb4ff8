"""Every installed game's routes (``engine.plugins.Route``), served by one adapter.

A game declares its routes as data with handlers over a ``GameCall``; this module does what
every route of the service does around them, in one place: the credential the route names,
admission, the JSON body, the path parameters (and the query parameters it declares) checked as
ids, the error mapping, and the answer of a member operation (``{"results": [...]}``, 409 for a
refusal or a conflict).

Its endpoints are called straight from ``realtime/app.py``'s fast path (``is_game_endpoint``),
past Starlette's router and middlewares, like the award path: a game's crowd (a flash sale's
claims, check-ins) is what this adapter serves, so it reads the request from the ASGI scope
(one pass over the headers) rather than through Starlette's per-request objects.
"""

from __future__ import annotations

import re
import weakref
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
from realtime.http import read_json, result_view, service, store_failure
from realtime.replies import ErrorBody, OperationReply

MAX_BODY = 4096
_PARAM = re.compile(r"{(\w+)}")
#: Every endpoint made here: ``realtime/app.py`` may call them past Starlette's router.
_ENDPOINTS: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


def starlette_routes(games: Sequence[Game]) -> list[StarletteRoute]:
    return [StarletteRoute(r.path, _endpoint(r), methods=[r.method.upper()]) for g in games for r in g.routes]


def is_game_endpoint(endpoint: object) -> bool:
    """Whether ``endpoint`` is a game route's, made by ``starlette_routes``."""
    return endpoint in _ENDPOINTS


def _endpoint(route: Route) -> Callable[[Request], Awaitable[Response]]:
    names = _PARAM.findall(route.path)
    # Each path parameter is checked as an id, up to its declared length (a name by default).
    lengths = {p.name: int(p.schema.get("maxLength", ids.NAME_MAX)) for p in route.params if p.where == "path"}
    # The query parameters the route declares, checked alike, in ``params`` when given (the
    # handler answers a required one missing).
    queries = {p.name: int(p.schema.get("maxLength", ids.NAME_MAX)) for p in route.params if p.where == "query"}
    kind = Kind.AWARD if route.kind == "award" else Kind.READ

    async def endpoint(request: Request) -> Response:
        svc = service(request)
        # The headers read, in one pass over the scope's (``request.headers`` would build a
        # ``Headers`` object each request): the first of each name, as ``Headers.get`` reads it.
        authorization: str | None = None
        length: bytes | None = None
        chunked: bytes | None = None
        for key, value in request.scope["headers"]:
            if key == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif key == b"content-length":
                if length is None:
                    length = value
            elif key == b"transfer-encoding":
                if chunked is None:
                    chunked = value
        member = None
        if route.caller == "member":
            member = svc.auth.member(authorization)
        elif route.caller == "shop":
            svc.auth.shop(authorization)
        else:
            svc.auth.admin(authorization)
        params = {name: ids.check_id(request.path_params[name], name, lengths.get(name, ids.NAME_MAX)) for name in names}
        if queries:
            given = request.query_params
            params.update({name: ids.check_id(given[name], name, n) for name, n in queries.items() if name in given})
        body: Any = None
        if route.method == "post" and (chunked or (length is not None and length != b"0")):
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
    _ENDPOINTS.add(endpoint)
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
