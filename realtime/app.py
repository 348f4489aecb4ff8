"""The app, assembled in one place: routes, error mapping, and the lifespan that owns resources."""

from __future__ import annotations

import contextlib
import logging
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
from realtime.routes import admin, config, docs, events, games, health, members, points, redeem, tokens
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
        WebSocketRoute("/v1/live", live.live),
        # Every other WebSocket path (this one matches no HTTP request): 404, not a bare 403.
        # A WebSocket route added later goes above it.
        WebSocketRoute("/{path:path}", live.no_such_socket),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/metrics", health.get_metrics, methods=["GET"]),
        Route("/openapi.json", docs.get_openapi, methods=["GET"]),
        Route("/docs", docs.get_docs, methods=["GET"]),
        Mount("/docs/static", app=docs.STATIC, name="docs-static"),
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


class EventsFastPath:
    """``POST /v1/events`` straight to its handler; everything else to the Starlette app.

    Every award request is this one route, and Starlette's error middlewares and router cost
    about a tenth of the service's CPU per award (measured with py-spy under ``make bench``).
    The handler is the same function the router would call, and its errors take the same
    handlers (``EXCEPTION_HANDLERS``), so the route answers exactly as it would through the app.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app

    @property
    def routes(self) -> list[BaseRoute]:
        return self.app.routes

    @property
    def state(self) -> State:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/events" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app  # what Starlette sets: request.app.state holds the service
        request = Request(scope, receive)
        try:
            response = await events.post_events(request)
        except ClientDisconnect:
            return  # nobody to answer; the admission ticket was released on the way out
        except Exception as exc:
            response = await handler_for(exc)(request, exc)
        await response(scope, receive, send)


def app_from_env() -> EventsFastPath:
    """Factory for uvicorn worker processes: settings come from the environment the CLI set."""
    logging.captureWarnings(True)  # a library's warning becomes a JSON log line like the rest
    return EventsFastPath(create_app(Settings.from_env()))
