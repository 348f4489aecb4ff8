"""The programme (admin): ``GET /v1/config`` shows the active version and its history, ``POST``
activates a posted TOML text as the next version on every process. Thin: authenticate, act, answer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from realtime.errors import json_response
from realtime.http import read_body, service
from realtime.replies import ConfigPosted, ConfigReply


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
