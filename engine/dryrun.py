"""What an operation would do now, without doing it: the real member script on copies.

Support staff and designers ask "what would this order earn?". The answer must be exactly what
applying it would do, so it is not a second implementation: the member's keys are copied under
scratch names (same hash tag, so the same slot: a cluster is fine), ``member.lua`` runs on the
copies with publishing off, and the copies are deleted. The ledger is write-only for the script,
so its copy starts empty.

All three steps are one MULTI/EXEC transaction: the server runs them back to back, so no other
client ever sees a copy, and a process killed at any moment leaves none behind (the transaction
either never reached the server or ran whole). An expiry on the copies could not promise that:
the script creates keys the copies did not have (a first lot, a ledger, a feed), and those would
have none.
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from engine.config import CompiledProgram
from engine.keys import Keys
from engine.operations import MemberPlan
from engine.scripts import Scripts
from engine.store import OpResult, decode_reply, member_args


class DryRun:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts

    async def apply(self, plan: MemberPlan, program: CompiledProgram) -> OpResult:
        """The result applying ``plan`` would have now; the member's own keys are only read."""
        real, _ = self._keys.member_script_keys(plan.op.member, plan.dedupe_bucket, plan.lookup_buckets, plan.record_buckets)
        tag = self._keys.member_tag(plan.op.member)
        scratch_tag = f"{tag}:x{secrets.token_hex(6)}"
        # Same suffixes (":p", ":d:<bucket>"...) under the scratch tag: member.lua reads the dedupe
        # bucket number from its key's name.
        scratch = [scratch_tag + key[len(tag) :] for key in real]
        ledger = 2  # KEYS[3]: write-only for the script
        args = member_args(plan, program, "")
        script = self._scripts.member
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=True)
            for i, (source, copy) in enumerate(zip(real, scratch)):
                if i != ledger:
                    pipe.copy(source, copy)
            pipe.evalsha(script.sha, len(scratch), *scratch, *args)
            pipe.delete(*scratch)
            replies = await pipe.execute(raise_on_error=False)
            reply = replies[-2]
            if isinstance(reply, NoScriptError) and attempt == 0:
                await script.load(self._redis)  # the server lost its scripts (restart, flush)
                continue
            if isinstance(reply, Exception):
                raise reply
            return decode_reply(reply)
        raise AssertionError("unreachable")  # pragma: no cover
