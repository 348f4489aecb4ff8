"""The one interface between the stores and Redis: call one script, or run many in order.

Stores build KEYS and ARGV and decode replies; how calls reach the server is the runner's
business. ``pipelining.AutoPipeline`` is the single-server runner (calls of one event-loop tick
share a write on one connection); a cluster runner routes each call by its first key's slot.
A store never holds a Redis client for script calls, so swapping runners touches no store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from engine.scripts import LuaScript

Call = tuple[LuaScript, Sequence[str], Sequence[Any]]


class Runner(Protocol):
    async def call(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One call's reply; an error reply raises (NOSCRIPT is handled: the script is loaded)."""
        ...

    async def run_many(self, calls: Sequence[Call]) -> list[Any]:
        """Replies in order, errors as values; the calls are applied in the order given."""
        ...

    async def aclose(self) -> None:
        """Close the runner's connections; calls from then on fail."""
        ...
