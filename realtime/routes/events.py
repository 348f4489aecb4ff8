"""Events (shop): ``POST /v1/events``, one event, a batch, or a dry run. Thin: parse and plan
(``engine/events.py``, ``engine/awards.py``), apply through the member script, answer.

This is the award path: ``realtime/app.py`` calls ``post_events`` straight from
``EventsFastPath``, past Starlette's middleware and router, so it takes no indirection of its own.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from engine import ids
from engine.care import cares
from engine.awards import plan_award
from engine.operations import MemberPlan
from engine.config import CompiledProgram
from engine.errors import InvalidInput
from engine.events import Event, parse_event
from engine.store import OpStatus
from realtime import metrics
from realtime.admission import Kind, admit, events_weight, gate_of, refuse_if_full
from realtime.errors import json_response
from realtime.http import header, read_json, result_view, service, store_failure
from realtime.replies import Effect, ErrorBody, EventsReply, OperationResult
from realtime.service import Service


_DONE = (OpStatus.APPLIED, OpStatus.DUPLICATE)


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
    # A duplicate too: its first answer may have failed after it applied (its moments' ids make
    # them once), and it replays the effects the moments look at.
    if event.type in program.care_events and result.status in _DONE and cares(program, event, result):
        await svc.care.after_events(program, [(event, result)], now_ms)
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
        await svc.care.after_batch(program, [(e, o) for (_, e), o in zip(events, outcomes)], now_ms)
    return json_response(EventsReply(results=results))  # type: ignore[typeddict-item]  # every None is filled above
