"""The app, assembled in one place: routes, error mapping, and the lifespan that owns resources."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route, WebSocketRoute

from engine.clock import Clock
from engine.errors import RekindleError
from realtime import api, live
from realtime.admission import Admission, Limits
from realtime.routes import admin, points, redeem
from realtime.errors import STORE_ERRORS, http_error, rekindle_error, store_unreachable, unexpected_error
from realtime.gcpacer import GcPacer
from realtime.service import Service
from realtime.settings import Settings


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
        Route("/v1/events", api.post_events, methods=["POST"]),
        Route("/v1/members/{member}", api.put_member, methods=["PUT"]),
        Route("/v1/members/{member}", api.get_member, methods=["GET"]),
        Route("/v1/members/{member}/points/spend", points.post_spend, methods=["POST"]),
        Route("/v1/members/{member}/coupons/{coupon}/use", points.post_coupon_use, methods=["POST"]),
        Route("/v1/me", api.get_me, methods=["GET"]),
        Route("/v1/me/redeem", redeem.post_redeem, methods=["POST"]),
        Route("/v1/tokens", api.post_token, methods=["POST"]),
        Route("/v1/config", api.get_config, methods=["GET"]),
        Route("/v1/config", api.post_config, methods=["POST"]),
        WebSocketRoute("/v1/live", live.live),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/metrics", api.get_metrics, methods=["GET"]),
    ]
    if settings.dev_clock:  # without --dev-clock the route does not exist: 404 like any unknown path
        routes.append(Route("/v1/admin/clock", admin.post_clock, methods=["POST"]))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            RekindleError: rekindle_error,
            HTTPException: http_error,
            **{cls: store_unreachable for cls in STORE_ERRORS},
            Exception: unexpected_error,
        },
    )


def app_from_env() -> Starlette:
    """Factory for uvicorn worker processes: settings come from the environment the CLI set."""
    logging.captureWarnings(True)  # a library's warning becomes a JSON log line like the rest
    return create_app(Settings.from_env())
