"""HTTP errors, and the one place where the engine's error tree becomes status codes.

Every error body has the same shape: ``{"error": {"code", "message", "field"?}}``. A 5xx says
nothing internal; the exception goes to the log, where the request's credentials never do.
"""

from __future__ import annotations

import logging

import orjson
from redis.exceptions import RedisError, ResponseError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from engine.errors import ConfigError, Conflict, InvalidInput, NotFound, RekindleError, StoreError

log = logging.getLogger("rekindle.http")


class Unauthorized(RekindleError):
    """Credentials are missing, unknown, expired or forged."""

    code = "unauthorized"


class Forbidden(RekindleError):
    """The credentials are good but do not reach this data (another member's)."""

    code = "forbidden"


class BadRequest(RekindleError):
    """The body is not JSON (or not UTF-8), so no field can be named but the body itself."""

    code = "bad_json"


class PayloadTooLarge(RekindleError):
    """The body exceeds the configured limit."""

    code = "payload_too_large"


class Unavailable(RekindleError):
    """Redis could not be reached or timed out; the request may be retried as is."""

    code = "unavailable"


STORE_ERRORS = (RedisError, ConnectionError, TimeoutError)

STATUS: list[tuple[type[RekindleError], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (BadRequest, 400),
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (ConfigError, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Unavailable, 503),
    (StoreError, 500),
]


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def status_of(exc: RekindleError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


async def rekindle_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RekindleError)
    status = status_of(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.code)
        return json_response({"error": {"code": exc.code, "message": "the service could not complete the request"}}, status)
    body: dict[str, object] = {"error": exc.as_dict()}
    if isinstance(exc, ConfigError):
        body["error"]["problems"] = [p.as_dict() for p in exc.problems]  # type: ignore[index]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return json_response(body, status, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return json_response({"error": {"code": code, "message": exc.detail}}, exc.status_code, exc.headers)


async def store_unreachable(request: Request, exc: Exception) -> Response:
    """Redis unreachable or timing out, wherever it happened: 503, retry as is. An error reply
    is a defect rather than an outage: 500, logged."""
    if isinstance(exc, ResponseError):
        return await unexpected_error(request, exc)
    log.warning("%s %s: store unavailable (%s)", request.method, request.url.path, type(exc).__name__)
    return json_response({"error": {"code": "unavailable", "message": "the store is unavailable; retry"}}, 503)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s: unexpected %s", request.method, request.url.path, type(exc).__name__)
    return json_response({"error": {"code": "internal", "message": "the service could not complete the request"}}, 500)
