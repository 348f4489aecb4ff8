"""Members (shop, and the member app for itself): write a member's profile facts, read a
member's snapshot, ``/v1/me`` for the member a token names. Thin: authenticate, parse, act, answer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from engine import ids
from engine.members import parse_profile
from engine.plugins import installed
from realtime.admission import Kind, admit, gate_of
from realtime.errors import json_response
from realtime.http import read_json, service
from realtime.replies import ProfileReply
from realtime.service import Service


async def put_member(request: Request) -> Response:
    svc = service(request)
    svc.auth.shop(request.headers.get("authorization"))
    member = ids.member_id(request.path_params["member"], "member")
    body = await read_json(request, 64 * 1024)
    with admit(gate_of(request), Kind.AWARD):  # a write the shop retries as is (PUT is idempotent)
        profile = parse_profile(body, member)
        before = await svc.care.check_profile(member, profile.fields)  # a referral loop: 422, nothing written
        await svc.members.put_profile(member, profile)
        # The moments it starts (welcome, the referrer's gift, the birthday job), each once by its
        # id: a PUT sent again after a failure here starts them again, harmlessly.
        await svc.care.after_profile(svc.programs.current.program, member, profile.fields, before, svc.clock.now_ms())
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
    snapshot = await svc.members.snapshot(member, program, svc.clock.now_ms())
    if program.games:
        ctx = svc.games
        for game in installed():
            if game.snapshot is not None and game.name in program.games:
                part = await game.snapshot(ctx, program, member)
                if part is not None:
                    snapshot["games"][game.name] = part
    return json_response(snapshot)
