"""The OpenAPI 3.1 document of the HTTP API, built from the code's own models and the programme.

Nothing here is written beside the code: the endpoints, their bodies, parameters and error codes
come from ``realtime/schemas.py``, their replies from the types the handlers build them with
(``realtime/replies.py``, ``engine/views.py``), and the events endpoint's body from the
programme's own event types, so the document says exactly what the live programme accepts: each declared type with
its fields, bounds and ``one_of`` values, the same checks ``engine.events.parse_event`` makes.
``GET /openapi.json`` serves it for the active programme (rebuilt when another version is
activated); ``rekindle openapi`` prints it for a programme file; ``docs/openapi.json`` is the
example programme's, held to the code by a test.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from pydantic import TypeAdapter

from engine import ids
from engine.config import CompiledProgram, EventType, FieldSpec, FieldType
from engine.events import DATA_INT_MAX
from engine.plugins import effect_data, installed
from engine.views import effect_data_text
from realtime.replies import ErrorBody
from realtime.schemas import LIVE_DESCRIPTION, Operation, all_operations

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"  # engine.ids: what may reach a Redis key
SCHEMAS = "#/components/schemas/"
EVENTS = "/v1/events"
SECURITY = {
    "shop": {"type": "http", "scheme": "bearer", "description": "A shop API key (REKINDLE_API_KEYS): the shop's backend."},
    "member": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "A member token: HS256, `sub` the member id, `exp` required, signed with "
                              "REKINDLE_TOKEN_SECRET (minted by the shop's backend or POST /v1/tokens)."},
    "admin": {"type": "http", "scheme": "bearer", "description": "An admin key (REKINDLE_ADMIN_KEYS)."},
}
ERROR_TEXT = {
    400: "The request is malformed or a field is invalid: `field` names it.",
    401: "No credentials, or not valid ones.",
    403: "Valid credentials that may not do this.",
    404: "No such resource.",
    409: "Refused by the state of things (the `code` says which); nothing was changed.",
    413: "The body is larger than the service accepts.",
    422: "Well-formed, but refused: `field` names what.",
    429: "The process is shedding load: send the same request again after `Retry-After` seconds.",
    500: "A defect: the service could not complete the request (logged; nothing internal is said).",
    503: "The store is unavailable or busy: nothing was written; send the same request again after `Retry-After`.",
}


def id_schema(max_len: int, description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_len, "pattern": ID_PATTERN, "description": description}


def field_schema(spec: FieldSpec) -> dict[str, Any]:
    """One field of an event's data, as ``parse_event`` checks it."""
    out: dict[str, Any]
    if spec.type is FieldType.INT:
        out = {"type": "integer",
               "minimum": spec.min if spec.min is not None else -DATA_INT_MAX,
               "maximum": spec.max if spec.max is not None else DATA_INT_MAX}
    elif spec.type is FieldType.STR:
        out = {"type": "string", "maxLength": spec.max_length}
        if spec.one_of is not None:
            out["enum"] = list(spec.one_of)
    else:
        out = {"type": "boolean"}
    if spec.description:
        out["description"] = spec.description
    return out


def data_schema(event: EventType) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": {name: field_schema(spec) for name, spec in event.fields.items()},
        "additionalProperties": False,
    }
    required = [name for name, spec in event.fields.items() if spec.required]
    if required:
        out["required"] = required
    return out


def event_schemas(program: CompiledProgram) -> dict[str, dict[str, Any]]:
    """``Event`` (one of the programme's event types, told apart by ``type``) and one schema per type."""
    schemas: dict[str, dict[str, Any]] = {}
    mapping = {}
    for name, event in sorted(program.events.items()):
        key = f"Event_{name}"
        mapping[name] = SCHEMAS + key
        schemas[key] = {
            "type": "object",
            "title": key,
            "description": event.description or f"A `{name}` event.",
            "properties": {
                "id": id_schema(ids.EVENT_ID_MAX, "The event's id, unique per shop: a retry with the same id "
                                                  "is answered `duplicate` and changes nothing. Ids starting "
                                                  "`rk:` are the engine's own (422)."),
                "member": id_schema(ids.MEMBER_ID_MAX, "The member the event is about."),
                "type": {"const": name},
                "at": {"description": "When it happened (default: when it arrives): ISO 8601 with an offset, or "
                                      "integer epoch milliseconds; within the programme's dedupe window and "
                                      "clock skew.",
                       "oneOf": [{"type": "integer", "minimum": 0, "maximum": 2**53 - 1},
                                 {"type": "string", "format": "date-time", "maxLength": 40}]},
                "data": data_schema(event),
            },
            "required": ["id", "member", "type"],
            "additionalProperties": False,
        }
    schemas["Event"] = {
        "description": f"One event of a type the active programme ({program.name}) declares.",
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    return schemas


def build(program: CompiledProgram, max_batch: int = 1000) -> dict[str, Any]:
    """The document for ``program``: deterministic (a programme gives the same bytes every time)."""
    operations = all_operations()
    types: list[type] = [ErrorBody]
    for op in operations:  # the events body is the programme's (below), not the generic model
        types += [t for t in (None if op.path == EVENTS else op.body, op.reply, *op.replies.values()) if t is not None]
    refs, defs = TypeAdapter.json_schemas(
        [(t, "validation", TypeAdapter(t)) for t in dict.fromkeys(types)], ref_template=SCHEMAS + "{model}"
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas.update(event_schemas(program))
    redeemable = sorted(name for name, item in program.model.catalog.items() if item.points_cost is not None)
    if "RedeemIn" in schemas:  # the items this programme sells for points
        item = schemas["RedeemIn"]["properties"]["item"]
        for bound in ("pattern", "minLength", "maxLength"):
            item.pop(bound, None)
        item["enum"] = redeemable
    if "Effect" in schemas:  # the games' effect types join the engine's closed list
        every = effect_data(installed())
        effect = schemas["Effect"]["properties"]
        effect["type"]["enum"] = list(every)
        effect["data"]["description"] = effect_data_text(every)
    schemas["EventBatch"] = {
        "type": "object",
        "description": f"Up to {max_batch} events, applied in order; one result each, in the same order.",
        "properties": {"events": {"type": "array", "items": {"$ref": SCHEMAS + "Event"}, "minItems": 1,
                                  "maxItems": max_batch}},
        "required": ["events"],
        "additionalProperties": False,
    }

    def ref(model: type) -> dict[str, Any]:
        return refs[(model, "validation")]

    events_body = {"oneOf": [{"$ref": SCHEMAS + "Event"}, {"$ref": SCHEMAS + "EventBatch"}]}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        body = events_body if op.path == EVENTS and op.method == "post" else ref(op.body) if op.body else None
        paths.setdefault(op.path, {})[op.method] = operation(op, body, ref)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rekindle",
            "version": _version(),
            "description": "The HTTP API of rekindle, a member-activation engine. The events endpoint's body is "
                           f"the active programme's: {program.name!r} (hash {program.program_hash}).\n\n"
                           f"The live feed (`GET /v1/live`, a WebSocket) is not an HTTP operation: {LIVE_DESCRIPTION}",
            "x-programme": {"name": program.name, "hash": program.program_hash},
        },
        "tags": [{"name": t} for t in dict.fromkeys(op.tag for op in operations)],
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.items())), "securitySchemes": SECURITY},
    }


def operation(op: Operation, body: dict[str, Any] | None, ref: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": op.description,
        "tags": [op.tag],
        "security": [{op.auth: []}] if op.auth else [],
    }
    if op.params:
        out["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.required or p.where == "path", "description": p.description,
             "schema": p.schema}
            for p in op.params
        ]
    if body is not None:
        content: dict[str, Any] = {"schema": body}
        if op.example_body is not None:
            content["example"] = op.example_body
        out["requestBody"] = {"required": True, "content": {"application/json": content}}
    elif op.text_body is not None:
        out["requestBody"] = {"required": True, "content": {op.text_body: {"schema": {"type": "string", "minLength": 1}}}}
    responses: dict[str, Any] = {}
    if op.reply is not None:
        reply: dict[str, Any] = {"schema": ref(op.reply)}
        if op.example_reply is not None:
            reply["example"] = op.example_reply
        responses[str(op.status)] = {"description": op.summary, "content": {"application/json": reply}}
        if op.links:
            responses[str(op.status)]["links"] = {
                link.name: {"operationId": link.operation_id, "parameters": link.parameters, "description": link.description}
                for link in op.links
            }
    else:
        responses[str(op.status)] = {"description": op.summary}
    retry_after = {"Retry-After": {"schema": {"type": "integer", "minimum": 1},
                                   "description": "Seconds to wait before sending the same request again."}}
    for status, model in sorted(op.replies.items()):
        responses[str(status)] = {
            "description": ERROR_TEXT.get(status, op.summary),
            "content": {"application/json": {"schema": ref(model)}},
            **({"headers": retry_after} if status in (429, 503) else {}),
        }
    for status, codes in sorted(op.errors.items()):
        text = ERROR_TEXT.get(status, "An error.")
        listed = ", ".join(f"`{c}`" for c in codes)
        responses[str(status)] = {
            "description": f"{text} `error.code`: {listed}." if codes else text,
            "content": {"application/json": {"schema": {"$ref": SCHEMAS + "ErrorBody"}}},
            **({"headers": retry_after} if status in (429, 503) else {}),
        }
    out["responses"] = responses
    return out


def _version() -> str:
    try:
        return metadata.version("rekindle")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout without install
        return "0"
