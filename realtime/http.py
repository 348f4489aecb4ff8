"""What every route module reads and answers through: the service, a header, the body (bounded,
then JSON), a store failure as 503 or 500, and one operation's result as the API shows it.

The handlers live by resource in ``realtime/routes/`` (and a game's in its own package); they
share these so that every route reads a body, names a bad one and maps a failing store alike.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import orjson
from redis.exceptions import ResponseError
from starlette.requests import ClientDisconnect, Request

from engine.errors import RekindleError, StoreError
from engine.store import OpResult, OpStatus
from realtime import metrics
from realtime.errors import BadRequest, PayloadTooLarge, Unavailable
from realtime.replies import ErrorDetail, OperationResult
from realtime.service import Service

log = logging.getLogger("rekindle.api")  # the name these lines have always been logged under


def service(request: Request) -> Service:
    """The service the app's lifespan opened (the events fast path sets ``scope["app"]`` as Starlette would)."""
    return request.app.state.service  # type: ignore[no-any-return]


def header(request: Request, name: bytes) -> str | None:
    """A request header (``name`` in lower case), read from the ASGI scope: ``request.headers``
    builds a ``Headers`` object per request, a cost every award paid (py-spy, ``make bench``)."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


async def read_body(request: Request, limit: int) -> bytes:
    # The content type is not checked: the body is JSON or it is refused by the parser, and
    # `curl -d` (form-encoded by default) is how many people first try the API.
    declared = header(request, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes", field="body")
    # The ASGI messages themselves: Starlette's stream() is an async generator, a cost per request.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes", field="body")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not body:
        raise BadRequest("body is empty", field="body")
    return body


async def read_json(request: Request, limit: int) -> Any:
    body = await read_body(request, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"not valid JSON: {exc}", field="body") from None


def store_failure(exc: BaseException) -> RekindleError:
    """A store that failed, timed out, or is busy or recovering (LOADING, BUSY, OOM, READONLY...)
    wrote nothing: 503 with Retry-After, retry as is (``Unavailable.of`` decides, for every
    endpoint). Any other error reply from the script is a defect, not a blip (500, logged): a
    retry would answer `duplicate` for what it left."""
    metrics.REDIS_ERRORS.inc()
    unavailable = Unavailable.of(exc)
    if unavailable is not None:
        return unavailable
    log.error("member.lua failed: %s", exc if isinstance(exc, ResponseError) else type(exc).__name__)
    return StoreError("the award script failed")


#: Why the member script refused a refund event: 422, with the message and the field it is about.
REFUND_REFUSALS: dict[str, tuple[str, str]] = {
    "unknown_original": ("no refundable event of this member has this id (or it is too old to be kept)", "data.of"),
    "already_refunded": ("the original event was already refunded in full", "data.of"),
    "refund_window_passed": ("the original event is older than the programme's refund window", "data.of"),
    "no_amount": ("the original event had no amount to take a share of: refund it whole", "data.amount"),
    "amount_exceeds_original": ("more than what is left to refund of the original's amount", "data.amount"),
}


_STATUS: dict[OpStatus, Literal["applied", "duplicate"]] = {OpStatus.APPLIED: "applied", OpStatus.DUPLICATE: "duplicate"}


def result_view(op_id: str, member: str, result: OpResult, id_field: str) -> OperationResult:
    """One operation's result as the API answers it (events, spends, coupon uses alike)."""
    if result.status is OpStatus.CONFLICT:
        return OperationResult(id=op_id, status="rejected", error=ErrorDetail(
            code="idempotency_conflict", message="this id was already used for a different operation", field=id_field))
    if result.status is OpStatus.REFUSED:
        message, field = REFUND_REFUSALS.get(result.refusal, ("refused", "id"))
        if field == "id":
            field = id_field
        elif id_field.endswith(".id"):  # in a batch: events[i].data.of
            field = id_field[: -len("id")] + field
        return OperationResult(id=op_id, status="rejected", error=ErrorDetail(code=result.refusal, message=message, field=field))
    view = OperationResult(id=op_id, member=member, status=_STATUS[result.status], effects=result.effects)
    if result.status is OpStatus.DUPLICATE:
        # What the first call applied: its feed entry, and its effects while the feed keeps them.
        view["original"] = result.original or None
    return view
