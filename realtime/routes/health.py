"""Operations (no credentials, never shed): ``GET /healthz``, readiness for a load balancer, and
``GET /metrics`` for Prometheus."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from realtime import metrics
from realtime.errors import STORE_ERRORS, json_response
from realtime.http import service
from realtime.replies import HealthReply


async def healthz(request: Request) -> Response:
    svc = service(request)
    try:
        await svc.redis.ping()
    except (*STORE_ERRORS, OSError):
        return json_response(HealthReply(status="unavailable", redis="down"), 503, {"Retry-After": "2"})
    if not svc.hub.healthy:
        return json_response(HealthReply(status="unavailable", live_feed="reconnecting"), 503, {"Retry-After": "2"})
    return json_response(HealthReply(status="ok", program_version=svc.programs.current.program_version, live_sockets=svc.hub.sockets))


async def get_metrics(request: Request) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
