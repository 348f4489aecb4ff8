"""The app, assembled in one place: routes, error mapping, and the lifespan that owns resources."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from engine.clock import Clock
from engine.errors import RekindleError
from engine.plugins import installed
from realtime import live
from realtime.admission import Admission, Limits
from realtime.routes import (
    admin, config, docs, events, games, health, members, page, points, redeem, stats, tokens, webhooks,
)
from realtime.errors import STORE_ERRORS, http_error, rekindle_error, store_unreachable, unexpected_error
from realtime.gcpacer import GcPacer
from realtime.service import Service
from realtime.settings import Settings

Handler = Callable[[Request, Exception], Awaitable[Response]]


def create_app(settings: Settings, clock: Clock | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = await Service.open(settings, clock)
        app.state.service = service
        app.state.admission = Admission(Limits(settings.max_inflight, settings.max_inflight_reads))
        pacer = GcPacer(lambda: service.hub.sockets, full_every_s=settings.gc_full_every_s)
        pacer.start()  # everything built so far lives as long as the process
        try:
            yield
        finally:
            await pacer.stop()
            await service.close()

    routes = [
        Route("/v1/events", events.post_events, methods=["POST"]),
        Route("/v1/members/{member}", members.put_member, methods=["PUT"]),
        Route("/v1/members/{member}", members.get_member, methods=["GET"]),
        Route("/v1/members/{member}/points/spend", points.post_spend, methods=["POST"]),
        Route("/v1/members/{member}/coupons/{coupon}/use", points.post_coupon_use, methods=["POST"]),
        Route("/v1/me", members.get_me, methods=["GET"]),
        Route("/v1/me/redeem", redeem.post_redeem, methods=["POST"]),
        Route("/v1/tokens", tokens.post_token, methods=["POST"]),
        Route("/v1/config", config.get_config, methods=["GET"]),
        Route("/v1/config", config.post_config, methods=["POST"]),
        Route("/v1/admin/webhooks/dead", webhooks.get_dead, methods=["GET"]),
        Route("/v1/stats", stats.get_stats, methods=["GET"]),
        Route("/v1/admin/webhooks/dead/replay", webhooks.post_replay, methods=["POST"]),
        WebSocketRoute("/v1/live", live.live),
        # Every other WebSocket path (this one matches no HTTP request): 404, not a bare 403.
        # A WebSocket route added later goes above it.
        WebSocketRoute("/{path:path}", live.no_such_socket),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/metrics", health.get_metrics, methods=["GET"]),
        Route("/openapi.json", docs.get_openapi, methods=["GET"]),
        Route("/docs", docs.get_docs, methods=["GET"]),
        Mount("/docs/static", app=docs.STATIC, name="docs-static"),
        Route("/", page.get_page, methods=["GET"]),
        Mount("/page", app=page.STATIC, name="page"),
    ]
    routes += games.starlette_routes(installed())  # every installed game's, through one adapter
    if settings.dev_clock:  # without --dev-clock the route does not exist: 404 like any unknown path
        routes.append(Route("/v1/admin/clock", admin.get_clock, methods=["GET"]))
        routes.append(Route("/v1/admin/clock", admin.post_clock, methods=["POST"]))
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)


#: Errors to responses, for every route and for the events fast path alike (by the class's MRO:
#: the most derived handler wins, as in Starlette's ExceptionMiddleware).
EXCEPTION_HANDLERS: dict[Any, Handler] = {
    RekindleError: rekindle_error,
    HTTPException: http_error,
    **{cls: store_unreachable for cls in STORE_ERRORS},
    Exception: unexpected_error,
}


def handler_for(exc: Exception) -> Handler:
    for cls in type(exc).__mro__:
        handler = EXCEPTION_HANDLERS.get(cls)
        if handler is not None:
            return handler
    return unexpected_error  # pragma: no cover - Exception is in the table


#: A path template compiled for the fast path: its segments, each a literal or None for a
#: ``{param}``, and the parameters' names with their positions.
Template = tuple[tuple[str | None, ...], tuple[tuple[str, int], ...]]
Endpoint = Callable[[Request], Awaitable[Response]]
#: (method, number of "/"-separated parts of the path) -> the plain routes of that shape, in the
#: router's order, each with its endpoint when the fast path may call it, else None.
Table = dict[tuple[str, int], list[tuple[Template, Endpoint | None]]]


class EventsFastPath:
    """``POST /v1/events`` and every game route straight to their handlers; everything else to the
    Starlette app.

    Every award request is ``POST /v1/events``, and Starlette's error middlewares and router cost
    about a tenth of the service's CPU per award (measured with py-spy under ``make bench``). A
    game's routes (a flash sale's claims, check-ins) come in crowds too, and come last in the
    router's list: there the middlewares and the router, its regex tried on every route before
    theirs, cost a fifth of a sold-out refusal's CPU and nearly as much of a claim's (py-spy under
    the loads of ``make bench`` phase [8]). So the events path is tested first, as cheaply as
    ever (the hottest path), then the game routes, compiled once from the app's own routes
    (``_compile``): a request whose method and path the router would have sent to a game route's
    endpoint goes straight to it, its path parameters in ``scope["path_params"]`` where the
    router puts them. Anything else (another route, a wrong method, a path that matches nothing,
    ``HEAD``, WebSockets) goes through the app, which answers as before (404, 405 and all).

    The handlers are the functions the router would call, and their errors take the same
    handlers (``handler_for``, ``EXCEPTION_HANDLERS``), so these routes answer exactly as they
    would through the app. One difference: a client gone before its body arrived gets no answer
    and leaves no error in the log (through the app: a 500 nobody reads, logged with a traceback).
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._table = _compile(app.routes)
        #: (method, path) -> what ``_match`` found: a game's hot paths (a sale's claim, a wheel's
        #: spin) repeat, so each is matched once; emptied when full (a bargain's paths do not repeat).
        self._found: dict[tuple[str, str], tuple[Endpoint, dict[str, str]] | None] = {}

    @property
    def routes(self) -> list[BaseRoute]:
        return self.app.routes

    @property
    def state(self) -> State:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/v1/events" and scope["method"] == "POST":
            endpoint: Endpoint = events.post_events
        else:
            key = (scope["method"], path)
            try:
                found = self._found[key]
            except KeyError:
                found = _match(self._table, key[0], path)
                if len(self._found) >= FOUND_MAX:
                    self._found.clear()
                self._found[key] = found
            if found is None:
                await self.app(scope, receive, send)
                return
            endpoint, params = found
            scope["path_params"] = dict(params)  # the request's own: nothing it does reaches the next
        scope["app"] = self.app  # what Starlette sets: request.app.state holds the service
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except ClientDisconnect:
            return  # nobody to answer; the admission ticket was released on the way out
        except Exception as exc:
            response = await handler_for(exc)(request, exc)
        await response(scope, receive, send)


_PLAIN_PARAM = re.compile(r"{(\w+)}")
FOUND_MAX = 4096  #: paths whose match the fast path remembers


def _template(path: str) -> Template | None:
    """``path``'s segments, or None unless each is a literal or a whole ``{param}`` (a
    convertor, ``{x:int}``, or a parameter inside a segment is not compiled)."""
    segments: list[str | None] = []
    params: list[tuple[str, int]] = []
    for i, segment in enumerate(path.split("/")):
        param = _PLAIN_PARAM.fullmatch(segment)
        if param is not None:
            segments.append(None)
            params.append((param.group(1), i))
        elif "{" in segment or "}" in segment:
            return None
        else:
            segments.append(segment)
    return tuple(segments), tuple(params)


def _may_overlap(prefix: str, template: Template) -> bool:
    """Whether a Mount at ``prefix`` may match a path of ``template`` (it matches ``prefix/...``)."""
    mounted = prefix.rstrip("/").split("/")
    segments = template[0]
    if len(segments) <= len(mounted):
        return False
    return all(t is None or t == m for t, m in zip(segments, mounted))


def _compile(routes: list[BaseRoute]) -> Table:
    """The game routes the fast path may serve, among every plain HTTP route in the router's
    order: a path the router would match first to another route is left to the router. A game
    route after a route the table cannot read (a Mount that may match its paths, a convertor) is
    left to the router too."""
    table: Table = {}
    opaque: list[BaseRoute] = []  # routes before this one that the table cannot order against
    for route in routes:
        if isinstance(route, WebSocketRoute):
            continue  # never matches an HTTP request
        compiled = _template(route.path) if isinstance(route, Route) and route.methods else None
        if compiled is None or not isinstance(route, Route):
            opaque.append(route)
            continue
        fast = games.is_game_endpoint(route.endpoint) and not any(
            not isinstance(o, Mount) or _may_overlap(o.path, compiled) for o in opaque)
        for method in route.methods or ():
            if method == "HEAD":
                continue  # a GET route's HEAD is left to the router (uvicorn drops the body)
            table.setdefault((method, len(compiled[0])), []).append((compiled, route.endpoint if fast else None))
    # Only the shapes a game route has, up to its last game route: a lookup elsewhere is a miss.
    compact: Table = {}
    for shape, entries in table.items():
        last = max((i for i, (_, endpoint) in enumerate(entries) if endpoint is not None), default=-1)
        if last >= 0:
            compact[shape] = entries[: last + 1]
    return compact


def _match(table: Table, method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
    """The endpoint and path parameters of the first route of ``table`` matching, as the router
    would find it (a ``{param}`` is one non-empty segment); None: the router's to answer."""
    parts = path.split("/")
    entries = table.get((method, len(parts)))
    if entries is None:
        return None
    for (segments, params), endpoint in entries:
        for segment, part in zip(segments, parts):
            if segment is None:
                if not part:
                    break
            elif segment != part:
                break
        else:
            if endpoint is None:
                return None  # the router's own route, before any game route of this shape
            return endpoint, {name: parts[i] for name, i in params}
    return None


def app_from_env() -> EventsFastPath:
    """Factory for uvicorn worker processes: settings come from the environment the CLI set."""
    logging.captureWarnings(True)  # a library's warning becomes a JSON log line like the rest
    return EventsFastPath(create_app(Settings.from_env()))
