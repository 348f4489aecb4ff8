"""HTTP errors, and the one place where the engine's error tree becomes status codes.

Every error body has the same shape: ``{"error": {"code", "message", "field"?}}``. A 5xx says
nothing internal; the exception goes to the log, where the request's credentials never do.
Every 503 carries ``Retry-After``: the store wrote nothing and the same request may be sent again.
So does every 429 (``overloaded``: admission control shed it before any work, ``realtime/admission.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import orjson
from redis.exceptions import RedisClusterException, RedisError, ResponseError, SlotNotCoveredError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from engine.errors import ConfigError, Conflict, InvalidInput, NotFound, RekindleError, StoreError
from realtime.replies import ErrorBody, ErrorDetail, Reply

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


class Overloaded(RekindleError):
    """This process holds as much work in flight as it takes (``realtime/admission.py``): nothing
    was read or written, and the same request may be sent again after ``retry_after_s``."""

    code = "overloaded"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("the service is at capacity; retry the same request after Retry-After seconds")
        self.retry_after_s = retry_after_s


#: Error replies after which the server has written nothing and will take the same command once
#: it recovers, with the seconds to suggest in ``Retry-After``: short for states that pass in
#: moments, longer for those that take a restart's load or an operator.
RETRY_AFTER_S: dict[str, int] = {
    "BUSY": 1,  # a script or function runs past busy-reply-threshold
    "TRYAGAIN": 1,  # cluster: the keys' slot is being migrated
    "READONLY": 2,  # a failover made the server a replica; the next call reconnects
    "MASTERDOWN": 2,  # a replica lost its primary (replica-serve-stale-data no)
    "CLUSTERDOWN": 2,  # a slot is not served until the cluster heals
    "MOVED": 1,  # cluster: a slot changed hands more times than one request follows
    "ASK": 1,  # cluster: likewise, half-way through a migration
    "NOREPLICAS": 2,  # fewer replicas than min-replicas-to-write
    "LOADING": 5,  # the dataset is loading after a restart: seconds to minutes
    "OOM": 5,  # maxmemory reached with noeviction: memory must be freed
    "MISCONF": 5,  # persistence is failing, so the server refuses writes
}
UNREACHABLE_RETRY_AFTER_S = 2  # connection refused, lost or timed out


# redis-py prefixes a pipelined command's error: "Command # 1 (HGETALL k) of pipeline caused error: ..."
_PIPELINED = "of pipeline caused error: "


def reply_code(exc: BaseException) -> str | None:
    """The first word of a store error reply (redis-py strips it from the message of the errors
    it has classes for and keeps it as ``status_code``; our RESP core sets both)."""
    if not isinstance(exc, RedisError):
        return None
    code = getattr(exc, "status_code", None)
    if code:
        return str(code)
    message = str(exc)
    if _PIPELINED in message:
        message = message.rpartition(_PIPELINED)[2].lstrip("('\"")
    return message.split(" ", 1)[0]


def retry_after_s(exc: BaseException) -> int | None:
    """Seconds after which a request that met ``exc`` may be sent again as is, or None when the
    store answered with an error a retry would meet again (a defect: 500, logged).

    The one place that decides: every endpoint's 503 and the award path's come through here.
    """
    code = reply_code(exc)
    if code in RETRY_AFTER_S:
        return RETRY_AFTER_S[code]
    if isinstance(exc, ResponseError):
        return None
    if isinstance(exc, (RedisError, OSError)):  # OSError: ConnectionError, TimeoutError
        return UNREACHABLE_RETRY_AFTER_S
    if isinstance(exc, SlotNotCoveredError):  # cluster: no live primary serves the slot (yet)
        return UNREACHABLE_RETRY_AFTER_S
    return None


def retryable(exc: BaseException) -> bool:
    """Nothing was written and the same request may be retried as is (503)."""
    return retry_after_s(exc) is not None


class Unavailable(RekindleError):
    """The store is unreachable, timed out, busy or recovering (LOADING, BUSY, OOM, READONLY...):
    nothing was written, and the request may be retried as is after ``retry_after_s``."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = UNREACHABLE_RETRY_AFTER_S, reason: str = "") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.reason = reason  # the reply's code or the exception's class: for the log, never the body

    @classmethod
    def of(cls, exc: BaseException) -> "Unavailable | None":
        """The 503 for a store error, or None if the error is a defect (see ``retry_after_s``)."""
        seconds = retry_after_s(exc)
        if seconds is None:
            return None
        code = reply_code(exc)
        reason = code if code in RETRY_AFTER_S else type(exc).__name__
        return cls("the store is unavailable; retry the same request", retry_after_s=seconds, reason=reason)


STORE_ERRORS = (RedisError, ConnectionError, TimeoutError, RedisClusterException)

STATUS: list[tuple[type[RekindleError], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (BadRequest, 400),
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (ConfigError, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Overloaded, 429),
    (Unavailable, 503),
    (StoreError, 500),
]


_DEFECT = "the service could not complete the request"  # a 5xx says nothing internal


def json_response(body: Reply, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """The only way a handler answers JSON: ``body`` is one of the reply types the API document is
    derived from (mypy holds every call to it)."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def status_of(exc: RekindleError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


async def rekindle_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RekindleError)
    status = status_of(exc)
    if isinstance(exc, Overloaded):  # shed on purpose: no log line each (rekindle_shed_total counts them)
        return json_response(ErrorBody(error=exc.as_dict()), status, {"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, Unavailable):
        # An outage or a busy server, not a defect: one line, no traceback, the reply's code only.
        log.warning("%s %s: store unavailable (%s); retry after %d s", request.method, request.url.path, exc.reason, exc.retry_after_s)
        message = "the store is unavailable; retry the same request after Retry-After seconds"
        return json_response(ErrorBody(error=ErrorDetail(code=exc.code, message=message)), status, {"Retry-After": str(exc.retry_after_s)})
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.code)
        return json_response(ErrorBody(error=ErrorDetail(code=exc.code, message=_DEFECT)), status)
    detail = exc.as_dict()
    if isinstance(exc, ConfigError):
        detail["problems"] = [p.as_dict() for p in exc.problems]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return json_response(ErrorBody(error=detail), status, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return json_response(ErrorBody(error=ErrorDetail(code=code, message=exc.detail)), exc.status_code, exc.headers)


async def store_unreachable(request: Request, exc: Exception) -> Response:
    """A store error wherever it happened: unreachable, timed out, busy or recovering is a 503
    with Retry-After (``retry_after_s`` decides); any other error reply is a defect: 500, logged
    with its traceback."""
    unavailable = Unavailable.of(exc)
    if unavailable is None:
        return await unexpected_error(request, exc)
    return await rekindle_error(request, unavailable)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s: unexpected %s", request.method, request.url.path, type(exc).__name__)
    return json_response(ErrorBody(error=ErrorDetail(code="internal", message=_DEFECT)), 500)
