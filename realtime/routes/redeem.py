"""Points redemption (member): ``POST /v1/me/redeem`` ``{"id", "item"}``. A thin handler: parse and
check against the programme (``engine/redeem.py``), redeem across the item and the member
(``engine/redemptions.py``), answer as every member operation answers."""

from __future__ import annotations

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from engine.errors import Refused
from engine.redeem import parse_redeem
from engine.store import OpResult, OpStatus
from realtime.admission import Kind, admit, gate_of
from realtime.http import read_json, result_view, service, store_failure
from realtime.errors import json_response
from realtime.replies import ErrorBody, OperationReply
from realtime.routes.points import REFUSALS

MAX_BODY = 4096

#: The one refusal the member script never gives: another call holds this very redemption.
IN_PROGRESS = "this redemption is being applied; retry the same request shortly"


async def post_redeem(request: Request) -> Response:
    svc = service(request)
    member = svc.auth.member(request.headers.get("authorization"))
    body = await read_json(request, MAX_BODY)
    with admit(gate_of(request), Kind.AWARD):
        now_ms = svc.clock.now_ms()
        program = svc.programs.current.program
        redeem = parse_redeem(body, member, program, now_ms)
        try:
            result = await svc.redemptions.redeem(program, redeem, now_ms)
        except (RedisError, OSError) as exc:
            # Whatever was reserved stays in the item's outbox: a retry or the sweep finishes it.
            raise store_failure(exc) from exc
    raise_redeem_refusal(result)
    view = result_view(redeem.op.id, member, result, "id")
    if result.status is OpStatus.CONFLICT:
        return json_response(ErrorBody(error=view["error"], results=[view]), 409)
    return json_response(OperationReply(results=[view]))


def raise_redeem_refusal(result: OpResult) -> None:
    """409 naming the code; every refusal of a redemption is about the item the member chose."""
    if result.status is not OpStatus.REFUSED:
        return
    if result.refusal == "in_progress":
        raise Refused("in_progress", IN_PROGRESS, field="id")
    message, _ = REFUSALS.get(result.refusal, ("refused", "item"))
    raise Refused(result.refusal, message, field="item")
