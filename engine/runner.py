"""The one interface between the stores and Redis: call one script or command, run many, or chain.

Stores build KEYS and ARGV and decode replies; how calls reach the server is the runner's
business. ``pipelining.AutoPipeline`` is the single-server runner (calls of one event-loop tick
share a write on one connection); a cluster runner routes each call by its first key's slot.
A store never holds a Redis client for script calls, so swapping runners touches no store.

Two ways to send many calls, and what each promises about order (``tests/engine/test_runner.py``
holds every runner to both): ``run_many`` keeps the order within a slot only, and runs
different slots side by side; ``run_chain`` applies each call only after the one before it,
whatever their slots, at the price of a round trip per change of node (none on one server when
the calls before the last are plain ``Command``s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from redis.exceptions import RedisError

from engine.scripts import Command, LuaScript

#: What a call sends: a script (EVALSHA, loaded again on NOSCRIPT) or a plain command.
Target = LuaScript | Command
#: One call: its target, its keys (the first routes it on a cluster), its other arguments.
Call = tuple[Target, Sequence[str], Sequence[Any]]


class ChainBroken(RedisError):
    """A call of a ``run_chain`` was not applied because a call of the chain failed: nothing of
    it was written, so the request may be sent again (a RedisError: the HTTP layer answers 503)."""

    def __init__(self, failed: int, target: Target, cause: BaseException) -> None:
        # The failed call's reply code (LOADING, OOM...) is this error's too: its Retry-After.
        super().__init__(
            f"not applied: call {failed} ({target.name}) of the chain failed first ({type(cause).__name__})",
            status_code=getattr(cause, "status_code", None),
        )
        self.failed = failed  # the index of the failed call in the chain
        self.cause = cause


def broken_after(calls: Sequence[Call], replies: list[Any]) -> list[Any]:
    """``replies`` with every reply after the first error replaced by a ``ChainBroken`` naming it:
    what a chain answers when its calls after a failure were not applied."""
    for i, reply in enumerate(replies):
        if isinstance(reply, BaseException):
            return [*replies[: i + 1], *(ChainBroken(i, calls[i][0], reply) for _ in replies[i + 1 :])]
    return replies


class Runner(Protocol):
    async def call(self, target: Target, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One call's reply; an error reply raises (NOSCRIPT is handled: the script is loaded)."""
        ...

    async def run_many(self, calls: Sequence[Call]) -> list[Any]:
        """Replies in the order of the calls, errors as values. Calls to one slot are applied in
        the order given, except that a call answered NOSCRIPT (or, on a cluster, redirected by a
        slot's migration) is sent again after the others; calls to different slots have no order
        (a cluster runs each primary's share side by side). Never rely on one call of a
        ``run_many`` being applied before another in a different slot: chain them."""
        ...

    async def run_chain(self, calls: Sequence[Call]) -> list[Any]:
        """Replies in the order of the calls, errors as values; each call is applied only after
        the one before it was applied successfully, whatever their slots. When a call fails, the
        calls after it are not applied, and each of their replies is a ``ChainBroken`` naming it.

        One server sends the calls in one write when every call but the last is a ``Command``
        (a MULTI/EXEC transaction: the connection orders them, none can be answered NOSCRIPT,
        and a refusal of any, such as OOM or LOADING, applies none of them, each other call
        answering ``ChainBroken``); otherwise call by call, each awaited. A cluster does the same
        for consecutive calls to one slot, and waits for each reply before the next slot. A
        connection lost under a transaction fails each of its calls with that error (all or none
        was applied, as unknown as a lone call's). The one case a failure cannot stop the calls
        after it: inside a transaction, a ``Command`` that fails only when run (a wrong type, a
        malformed number: the caller's defect), whose later calls' replies are then their own."""
        ...

    def send(self, target: Target, keys: Sequence[str], args: Sequence[Any]) -> None:
        """One call whose reply nobody awaits, its error dropped: only for a call whose loss
        something else makes good (a decided entry's intent: its job finds the decision)."""
        ...

    async def aclose(self) -> None:
        """Close the runner's connections; calls from then on fail."""
        ...
