"""HTTP handlers: parse, call the domain, encode. No rule lives here.

Every handler authenticates first, so an unauthenticated caller learns nothing about members or
programmes, then validates everything it was sent before the first Redis call.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any, Literal

import orjson
from redis.exceptions import RedisError, ResponseError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from engine import ids
from engine.awards import plan_award
from engine.operations import MemberPlan
from engine.config import CompiledProgram
from engine.errors import InvalidInput, RekindleError, StoreError
from engine.events import Event, parse_event
from engine.members import parse_profile
from engine.store import OpResult, OpStatus
from realtime import metrics
from realtime.admission import Kind, admit, events_weight, gate_of, refuse_if_full
from realtime.errors import STORE_ERRORS, BadRequest, PayloadTooLarge, Unavailable, json_response
from realtime.replies import (
    ConfigPosted, ConfigReply, Effect, ErrorBody, ErrorDetail, EventsReply, HealthReply, OperationResult, ProfileReply,
    TokenReply,
)
from realtime.service import Service

MAX_TOKEN_TTL_S = 30 * 24 * 3600
log = logging.getLogger("rekindle.api")


def service(request: Request) -> Service:
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


# --- events ---------------------------------------------------------------------------------------


async def post_events(request: Request) -> Response:
    started = perf_counter()
    svc = service(request)
    svc.auth.shop(header(request, b"authorization"))
    dry_run = _flag(request, "dry_run")
    kind = Kind.READ if dry_run else Kind.AWARD
    gate = gate_of(request)
    refuse_if_full(gate, kind)  # a full pool refuses before the body is read: a spike's refusals cost least
    body = await read_json(request, svc.settings.max_body_bytes)
    # Admitted once the body is parsed and before any per-event work: a batch weighs its events.
    with admit(gate, kind, events_weight(body)):
        active = svc.programs.current
        now_ms = svc.clock.now_ms()
        window_ms = active.window_ms(now_ms)
        if isinstance(body, dict) and "events" in body:
            if dry_run:
                raise InvalidInput("a dry run takes one event, not a batch", field="dry_run")
            response = await _post_batch(svc, body, active.program, now_ms, window_ms)
            endpoint = "batch"
        elif dry_run:
            return await _dry_run(svc, body, active.program, now_ms, window_ms)
        else:
            response = await _post_one(svc, body, active.program, now_ms, window_ms)
            endpoint = "single"
    metrics.observe_award(endpoint, perf_counter() - started)
    return response


def _flag(request: Request, name: str) -> bool:
    if not request.scope["query_string"]:  # the usual case, without parsing a query per request
        return False
    value = request.query_params.get(name)
    if value is None or value in ("0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise InvalidInput("must be 1, true, 0 or false", field=name)


async def _dry_run(svc: Service, body: Any, program: CompiledProgram, now_ms: int, window_ms: int) -> Response:
    """The effects the event would have now, by the real member script on copies; nothing is
    written, published or counted. Effects carry no ids: no feed entry was made."""
    if not isinstance(body, dict):
        raise InvalidInput(f"must be an event object, not {ids.kind_of(body)}", field="body")
    event = parse_event(body, program, now_ms, window_ms)
    try:
        result = await svc.dry_run.apply(plan_award(program, event, now_ms), program)
    except (RedisError, OSError) as exc:
        raise store_failure(exc) from exc
    view = result_view(event.id, event.member, result, "id")
    view["effects"] = [Effect(type=e["type"], data=e["data"]) for e in view.get("effects", [])]
    view["dry_run"] = True
    return json_response(EventsReply(results=[view]))


async def _post_one(svc: Service, body: Any, program: CompiledProgram, now_ms: int, window_ms: int) -> Response:
    if not isinstance(body, dict):
        metrics.count_event("-", "rejected")
        raise InvalidInput(f'must be an event object or {{"events": [...]}}, not {ids.kind_of(body)}', field="body")
    try:
        event = parse_event(body, program, now_ms, window_ms)
        plan = plan_award(program, event, now_ms)
    except InvalidInput:
        metrics.count_event("-", "rejected")
        raise
    try:
        started = perf_counter()
        result = await svc.ops.apply(plan, program)
        metrics.STORE_SECONDS.observe(perf_counter() - started)
    except (RedisError, OSError) as exc:
        raise store_failure(exc) from exc
    view = result_view(event.id, event.member, result, "id")
    metrics.count_event(event.type, view["status"])
    if "error" in view:  # refused: 409 for an idempotency conflict, 422 for a refund that cannot apply
        return json_response(ErrorBody(error=view["error"], results=[view]), 409 if result.status is OpStatus.CONFLICT else 422)
    return json_response(EventsReply(results=[view]))


async def _post_batch(
    svc: Service, body: dict[str, Any], program: CompiledProgram, now_ms: int, window_ms: int
) -> Response:
    extra = body.keys() - {"events"}
    if extra:
        raise InvalidInput("unknown key (a batch holds only `events`)", field=sorted(map(str, extra))[0])
    raw_events = body["events"]
    if not isinstance(raw_events, list):
        raise InvalidInput(f"must be an array, not {ids.kind_of(raw_events)}", field="events")
    if not 1 <= len(raw_events) <= svc.settings.max_batch:
        raise InvalidInput(f"must hold 1 to {svc.settings.max_batch} events", field="events")

    results: list[OperationResult | None] = [None] * len(raw_events)
    events: list[tuple[int, Event]] = []
    plans: list[MemberPlan] = []
    for i, raw in enumerate(raw_events):
        try:
            event = parse_event(raw, program, now_ms, window_ms)
            plans.append(plan_award(program, event, now_ms))
            events.append((i, event))
        except InvalidInput as exc:
            exc.at(f"events[{i}]")
            raw_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
            results[i] = OperationResult(id=raw_id, status="rejected", error=exc.as_dict())
            metrics.count_event("-", "rejected")
    if events:
        started = perf_counter()
        try:
            outcomes = await svc.ops.apply_many(plans, program)
        except (RedisError, OSError) as exc:
            raise store_failure(exc) from exc
        metrics.STORE_SECONDS.observe(perf_counter() - started)
        failed = [o for o in outcomes if isinstance(o, Exception)]
        if failed:
            # Some events may have been applied: a retry of the whole batch answers those
            # `duplicate` and applies the rest, so the batch is refused whole.
            raise store_failure(failed[0]) from failed[0]
        for (i, event), outcome in zip(events, outcomes):
            view = result_view(event.id, event.member, outcome, f"events[{i}].id")  # type: ignore[arg-type]
            metrics.count_event(event.type, view["status"])
            results[i] = view
    return json_response(EventsReply(results=results))  # type: ignore[typeddict-item]  # every None is filled above


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


# --- members --------------------------------------------------------------------------------------


async def put_member(request: Request) -> Response:
    svc = service(request)
    svc.auth.shop(request.headers.get("authorization"))
    member = ids.member_id(request.path_params["member"], "member")
    body = await read_json(request, 64 * 1024)
    with admit(gate_of(request), Kind.AWARD):  # a write the shop retries as is (PUT is idempotent)
        profile = parse_profile(body, member)
        await svc.members.put_profile(member, profile)
    return json_response(ProfileReply(member=member, updated=sorted(profile.fields)))  # type: ignore[arg-type]  # parse_profile's keys


async def get_member(request: Request) -> Response:
    svc = service(request)
    svc.auth.shop(request.headers.get("authorization"))
    member = ids.member_id(request.path_params["member"], "member")
    with admit(gate_of(request), Kind.READ):
        return await _snapshot(svc, member)


async def get_me(request: Request) -> Response:
    svc = service(request)
    member = svc.auth.member(request.headers.get("authorization"))
    with admit(gate_of(request), Kind.READ):
        return await _snapshot(svc, member)


async def _snapshot(svc: Service, member: ids.MemberId) -> Response:
    program = svc.programs.current.program
    return json_response(await svc.members.snapshot(member, program, svc.clock.now_ms()))


async def post_token(request: Request) -> Response:
    svc = service(request)
    svc.auth.shop(request.headers.get("authorization"))
    body = await read_json(request, 4096)
    if not isinstance(body, dict):
        raise InvalidInput(f"must be a JSON object, not {ids.kind_of(body)}", field="body")
    for key in body:
        if key not in ("member", "ttl_s"):
            raise InvalidInput("unknown key (expected member, ttl_s)", field=str(key))
    member = ids.member_id(body.get("member"), "member")
    ttl_s = ids.whole(body.get("ttl_s", svc.settings.token_ttl_s))
    if ttl_s is None or ttl_s < 60:
        raise InvalidInput(f"must be an integer from 60 to {MAX_TOKEN_TTL_S}", field="ttl_s")
    if ttl_s > MAX_TOKEN_TTL_S:
        raise InvalidInput(f"is above the maximum, {MAX_TOKEN_TTL_S} s", field="ttl_s")
    token, expires_ms = svc.auth.mint(member, svc.clock.now_ms(), ttl_s)
    return json_response(TokenReply(member=member, token=token, expires_at_ms=expires_ms))


# --- programme and operations ---------------------------------------------------------------------


async def get_config(request: Request) -> Response:
    svc = service(request)
    svc.auth.admin(request.headers.get("authorization"))
    active = svc.programs.current
    return json_response(ConfigReply(
        program_version=active.program_version,
        program_hash=active.program.program_hash,
        name=active.program.name,
        origin=active.origin,
        activated_at_ms=active.activated_at_ms,
        history=await svc.programs.history(),
    ))


async def post_config(request: Request) -> Response:
    """Body: the programme's TOML text. Valid: activated as a new version everywhere."""
    svc = service(request)
    svc.auth.admin(request.headers.get("authorization"))
    source = await read_body(request, 1024 * 1024)
    active = await svc.programs.activate(source, origin="api", file="<posted>")
    return json_response(ConfigPosted(program_version=active.program_version, program_hash=active.program.program_hash, name=active.program.name))


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
