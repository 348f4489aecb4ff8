"""What a game adds to the engine, declared in one place, and how the engine finds the games.

A game is a package under ``games/`` with a ``GAME`` of type ``Game``: its programme section, its
effect types, its objects and member steps on the cross-slot seam, its jobs, its routes (as
data: the service turns them into HTTP routes, documents them in /openapi.json and maps their
errors), its part of the member snapshot, its ``rekindle verify`` checks and the inventory items
it declares. Its metrics are ``prometheus_client`` metrics of its own package, which ``/metrics``
serves with the service's. The engine names no game: it loads every ``Game`` listed under the ``rekindle.games`` entry points of the installed
distribution (``pyproject.toml``: one line a game), the way pytest finds its plugins. Adding a
game touches its package and that one line.

Nothing here imports Starlette: a route is a method, a path and an async handler over a
``GameCall``; ``realtime`` does the HTTP (credentials, admission, JSON, error bodies).
"""

from __future__ import annotations

import functools
import random
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from pydantic import BaseModel, RootModel

from engine import ids
from engine.clock import Clock
from engine.config import CompiledProgram, Item
from engine.crossing import Crossing, StepKind
from engine.errors import NotFound, Refused
from engine.jobs import Handler, Task
from engine.keys import Keys
from engine.members import MemberStore
from engine.runner import Runner
from engine.scripts import LuaScript
from engine.store import OperationStore, OpResult
from engine.views import EFFECT_DATA

ENTRY_POINTS = "rekindle.games"


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter of an operation, for the API document."""

    name: str
    where: str  # "path" | "query" | "header"
    schema: dict[str, Any]  # JSON Schema of the value
    description: str
    required: bool = False


def name_param(name: str, description: str) -> Param:
    """A path parameter naming one of a game's campaigns (a sale, a wheel) in the programme."""
    return Param(name, "path", {"type": "string", "minLength": 1, "maxLength": 64,
                                "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@-]*$"}, description, required=True)


#: Where a campaign with an opening and an end (a sale, a wheel) stands at an instant.
Window = Literal["upcoming", "open", "ended"]


Entry = TypeVar("Entry")


def section_entry(program: CompiledProgram, game: str, section: type[RootModel[dict[str, Entry]]], name: str,
                  what: str, field: str) -> Entry:
    """One campaign (a sale, a wheel...) of a game's section in ``program``; 404 naming ``field``
    when the section holds none of that name."""
    found = program.games.get(game)
    entry = found.root.get(name) if isinstance(found, section) else None
    if entry is None:
        raise NotFound(f"no such {what} in the programme", field=field)
    return entry


def epoch_ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def window(opens_at: datetime | None, ends_at: datetime | None, now_ms: int) -> Window:
    """Open from ``opens_at`` (not set: always) until ``ends_at`` (exclusive; not set: never)."""
    opens, ends = epoch_ms(opens_at), epoch_ms(ends_at)
    if opens is not None and now_ms < opens:
        return "upcoming"
    if ends is not None and now_ms >= ends:
        return "ended"
    return "open"


def require_open(opens_at: datetime | None, ends_at: datetime | None, now_ms: int, what: str, field: str) -> None:
    """Refuse (409 ``not_open`` or ``ended``, naming ``field``) a call outside the window."""
    state = window(opens_at, ends_at, now_ms)
    if state == "upcoming":
        raise Refused("not_open", f"this {what} has not opened yet", field=field)
    if state == "ended":
        raise Refused("ended", f"this {what} has ended", field=field)


def window_problems(path: str, opens_at: datetime | None, ends_at: datetime | None) -> list[tuple[str, str]]:
    """A programme's check of a window: an end at or before the opening could never be open."""
    if opens_at is not None and ends_at is not None and ends_at <= opens_at:
        return [(f"{path}.ends_at", "is not after opens_at")]
    return []


@dataclass(frozen=True)
class Link:
    """Where a successful answer leads: another operation, with parameters taken from this call
    (OpenAPI runtime expressions). Client generators and schemathesis's stateful runs follow them."""

    name: str
    operation_id: str
    parameters: dict[str, str]
    description: str


class Draws(Protocol):
    """Where a game's chance comes from (a prize, a card, a bargain's cuts)."""

    def randbelow(self, n: int) -> int: ...

    def token_bytes(self, n: int) -> bytes: ...


class _SystemDraws:
    """The operating system's randomness: nobody can predict a draw, not even from its id."""

    randbelow = staticmethod(secrets.randbelow)
    token_bytes = staticmethod(secrets.token_bytes)


_SYSTEM = _SystemDraws()


def system_draws(key: str) -> Draws:
    """Production's draws: the key is ignored (a client choosing ids could otherwise choose prizes)."""
    return _SYSTEM


class _SeededDraws:
    def __init__(self, source: random.Random) -> None:
        self._source = source

    def randbelow(self, n: int) -> int:
        return self._source.randrange(n)

    def token_bytes(self, n: int) -> bytes:
        return self._source.randbytes(n)


def seeded_draws(seed: int) -> Callable[[str], Draws]:
    """A simulation's draws: each from the seed and the action's own key (its member and operation
    id), so a draw does not depend on the order concurrent actions happen to run in."""
    return lambda key: _SeededDraws(random.Random(f"{seed}:draw:{key}"))


class Context(NamedTuple):
    """What a game's handlers and jobs may use: the engine's stores, never a member key directly."""

    keys: Keys
    runner: Runner  # object scripts and reads by script
    ops: OperationStore  # member plans, through member.lua
    crossing: Crossing  # the seam: intents, object steps, member steps, decisions
    members: MemberStore  # a member's state read by field (snapshot parts), never by key
    redis: Any  # plain reads of the game's own objects (a sale's state for GET)
    clock: Clock
    program: Callable[[], CompiledProgram]  # the active programme
    #: The source of a draw, by the action's key (``system_draws``: unpredictable; a simulation
    #: passes ``seeded_draws``).
    draws: Callable[[str], Draws] = system_draws


class GameCall(NamedTuple):
    """One HTTP call to a game route, checked by the service before the handler sees it."""

    ctx: Context
    member: ids.MemberId | None  # the token's member, for member routes
    params: Mapping[str, str]  # path parameters
    body: Any  # the parsed JSON body (None for GET)
    program: CompiledProgram  # the active programme, read once for the call
    now_ms: int


class Answer(NamedTuple):
    """A handler's reply: a body built through the route's reply type, or a member operation's
    result, answered as every operation is (``{"results": [...]}``, a refusal 409 with its code)."""

    body: Mapping[str, Any] | None = None
    status: int = 200
    operation: tuple[ids.EventId, OpResult] | None = None  # (operation id, its result)


Caller = Literal["member", "shop", "admin"]


@dataclass(frozen=True)
class Route:
    """One HTTP route of a game: what ``realtime`` serves and documents. Business refusals are
    raised as ``engine.errors.Refused`` (409 with a code), bad input as ``InvalidInput`` (422 naming
    the field), an unknown campaign as ``NotFound`` (404): the service maps them in one place."""

    method: Literal["get", "post"]
    path: str  # "/v1/games/flash/{sale}/claim"
    operation_id: str
    summary: str
    description: str
    caller: Caller
    handler: Callable[[GameCall], Awaitable[Answer]]
    #: The success body's schema, a TypedDict; None: the answer of a member operation
    #: (``{"results": [...]}``, as spends and coupon uses answer), documented as such.
    reply: type | None = None
    body: type[BaseModel] | None = None  # the request body's schema (the handler checks it itself)
    status: int = 200
    params: tuple[Param, ...] = ()
    errors: dict[int, tuple[str, ...]] = field(default_factory=dict)  # status -> every error.code
    example_body: dict[str, Any] | None = None
    links: tuple[Link, ...] = ()
    #: Weight for admission control: "award" for a write to members, "read" otherwise.
    kind: Literal["award", "read"] = "award"
    #: The route's own refusal codes (a member operation's, or the object's): message and field.
    refusals: Mapping[str, tuple[str, str]] = field(default_factory=dict)


#: A programme's cross-checks of a game's section: (key path, problem) pairs.
Check = Callable[[Any, Any], list[tuple[str, str]]]
#: A game's own invariants over one of its objects, for ``rekindle verify``: (programme, object
#: kind, object id, the object's counters) -> breaches, each a line naming what is wrong.
ObjectCheck = Callable[[CompiledProgram | None, str, str, Mapping[str, int]], list[str]]
#: A game's invariants across members and its objects, for ``rekindle verify``: (redis, keys, the
#: active programme, every counted item's total over all members by state field ``i:<item>``) ->
#: breaches. It reads with plain commands (an offline tool, as verify is).
Audit = Callable[[Any, Keys, CompiledProgram | None, Mapping[str, int]], Awaitable[list[str]]]
#: The member's part of the snapshot under ``games.<name>``: (ctx, program, member) -> data.
SnapshotPart = Callable[[Context, CompiledProgram, ids.MemberId], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True)
class Game:
    """Everything one game adds, read in one place each (see the module's docstring)."""

    name: str  # its section ``[games.<name>]`` and its routes' prefix ``/v1/games/<name>``
    section: type[BaseModel] | None = None  # the section's model: checked, in the JSON Schema and docs
    check: Check | None = None  # cross-checks against the rest of the programme
    effects: Mapping[str, type] = field(default_factory=dict)  # effect type -> its data's TypedDict
    objects: Mapping[str, LuaScript] = field(default_factory=dict)  # object kind -> its script (seam)
    steps: Mapping[str, StepKind] = field(default_factory=dict)  # member step kind -> its planner
    jobs: Mapping[str, Handler] = field(default_factory=dict)  # pure job kinds
    tasks: Mapping[str, Callable[[Context], Task]] = field(default_factory=dict)  # job kinds with I/O
    routes: Sequence[Route] = ()
    snapshot: SnapshotPart | None = None
    verify: ObjectCheck | None = None  # checked for each object of a kind in ``objects``
    #: The inventory items the game's section declares (spins of a wheel, make-up cards), by name
    #: ``<game>:<name>``: what rules, quests and tiers may grant (``items = {"lottery:daily" = 1}``).
    items: Callable[[Any], Mapping[str, Item]] | None = None
    #: An object of the game that members may follow on the live feed (``Watch``, below).
    watch: Watch | None = None
    #: Scripts of the game that are no seam object (a report's counters), by name: loaded and
    #: checked at start-up with the others.
    scripts: Mapping[str, LuaScript] = field(default_factory=dict)
    #: The game's checks across members and objects for ``rekindle verify`` (card conservation):
    #: given the totals of every counted item over all members, by state field.
    audit: Audit | None = None


@functools.cache
def installed() -> tuple[Game, ...]:
    """Every game of the installed distribution, by name (loaded once per process)."""
    games: dict[str, Game] = {}
    for point in entry_points(group=ENTRY_POINTS):
        game = point.load()
        if not isinstance(game, Game):
            raise TypeError(f"entry point {point.name} = {point.value} is not an engine.plugins.Game")
        if game.name in games:
            raise ValueError(f"two games named {game.name!r}")
        games[game.name] = game
    return tuple(games[name] for name in sorted(games))


def effect_data(games: Sequence[Game]) -> dict[str, type]:
    """Every effect type's ``data`` shape: the engine's (``engine.views.EFFECT_DATA``), then each
    game's, for the API document and the live feed's frame table."""
    out: dict[str, type] = dict(EFFECT_DATA)
    for game in games:
        for kind, shape in game.effects.items():
            if kind in out:
                raise ValueError(f"game {game.name!r} declares effect type {kind!r}, which exists already")
            out[kind] = shape
    return out


def all_scripts(games: Sequence[Game]) -> list[LuaScript]:
    return [script for game in games for script in (*game.objects.values(), *game.scripts.values())]


@dataclass(frozen=True)
class Watch:
    """An object of a game that members may follow live: ``{"op": "watch", <key>: <id>}`` on
    ``GET /v1/live`` (a bargain: its page, held by its owner and by the friends who opened its link).

    Every change of such an object lands on its owner's feed as effects whose data names the object
    under ``key``. Watching it is following the owner's feed, limited to those effects: nothing else
    of the owner's feed reaches a watcher, nothing new is written or published, and a watch resumes
    by the owner's feed ids. The id is the capability (the share link), as for the object's GET.
    """

    key: str  # the op's key, the watch frames' top-level key, and the effects' data key naming the object
    owner: Callable[[str], str]  # an id -> its owner's member id; ValueError for an id of no object's shape
    exists: Callable[[Context, str], Awaitable[object]]  # raises ``engine.errors.NotFound`` for an object never made

    def concerns(self, obj: str, data: Mapping[str, Any]) -> bool:
        """Whether an effect is about the object ``obj``: its data names it under ``key``."""
        return data.get(self.key) == obj
