"""Points and coupons (shop): spend a member's points, mark a coupon used. Thin handlers: parse,
plan (``engine/operations.py``), apply through the member script, answer."""

from __future__ import annotations

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from engine import ids
from engine.errors import NotFound, Refused
from engine.operations import MemberPlan, parse_coupon_use, parse_spend, plan_coupon_use, plan_spend
from engine.store import OpResult, OpStatus
from realtime.admission import Kind, admit, gate_of
from realtime.http import store_failure, read_json, result_view, service
from realtime.errors import json_response
from realtime.replies import ErrorBody, OperationReply
from realtime.service import Service

MAX_BODY = 4096

#: A refusal's message and the request field it is about, by the member script's reason.
REFUSALS: dict[str, tuple[str, str]] = {
    "insufficient_points": ("the member's live points balance cannot cover this", "amount"),
    "already_used": ("this coupon was already used", "coupon"),
    "revoked": ("this coupon was revoked (its order was refunded)", "coupon"),
    "expired": ("this coupon has expired", "coupon"),
    "limit_reached": ("the member has reached this item's limit", "item"),
    "out_of_stock": ("this item is out of stock", "item"),
    "not_eligible": ("this item is not for this member (its audience: tiers, tags, new or dormant members)", "item"),
}


async def post_spend(request: Request) -> Response:
    """``POST /v1/members/{member}/points/spend`` ``{"id", "amount", "reason"}``."""
    svc = service(request)
    svc.auth.shop(request.headers.get("authorization"))
    member = ids.member_id(request.path_params["member"], "member")
    body = await read_json(request, MAX_BODY)
    with admit(gate_of(request), Kind.AWARD):
        now_ms = svc.clock.now_ms()
        spend = parse_spend(body, member, now_ms)
        return await answer(svc, plan_spend(svc.programs.current.program, spend, now_ms))


async def post_coupon_use(request: Request) -> Response:
    """``POST /v1/members/{member}/coupons/{coupon}/use`` ``{"id", "order"}``."""
    svc = service(request)
    svc.auth.shop(request.headers.get("authorization"))
    member = ids.member_id(request.path_params["member"], "member")
    body = await read_json(request, MAX_BODY)
    with admit(gate_of(request), Kind.AWARD):
        now_ms = svc.clock.now_ms()
        use = parse_coupon_use(body, member, request.path_params["coupon"], now_ms)
        return await answer(svc, plan_coupon_use(svc.programs.current.program, use, now_ms))


async def answer(svc: Service, plan: MemberPlan) -> Response:
    """Apply one plan and answer: 200 applied or duplicate, 409 refused or conflicting."""
    program = svc.programs.current.program
    try:
        result = await svc.ops.apply(plan, program)
    except (RedisError, OSError) as exc:
        raise store_failure(exc) from exc
    raise_refusal(result)
    view = result_view(plan.op.id, plan.op.member, result, "id")
    if result.status is OpStatus.CONFLICT:
        return json_response(ErrorBody(error=view["error"], results=[view]), 409)
    return json_response(OperationReply(results=[view]))


def raise_refusal(result: OpResult) -> None:
    if result.status is not OpStatus.REFUSED:
        return
    if result.refusal == "not_found":
        raise NotFound("the member holds no such coupon", field="coupon")
    message, field = REFUSALS.get(result.refusal, ("refused", "id"))
    raise Refused(result.refusal, message, field=field)
