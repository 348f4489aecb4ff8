"""The programme reference (docs/programme.md), generated from the models so it cannot drift.

Every key, type, default, bound and description comes from ``engine.config``: change a model,
then run ``python -m engine.reference > docs/programme.md``; tests/engine/test_reference.py
fails while the committed file differs from this output.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterator
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import AwareDatetime, BaseModel, RootModel
from pydantic.fields import FieldInfo

from engine import config

# The name a designer gives the entries of each table of named things, for key path patterns.
_ENTRY = {
    "events": "<event>", "fields": "<field>", "rules": "<rule>",
    "where": "<field>", "quests": "<quest>", "catalog": "<item>",
}
_SCALARS = {int: "integer", bool: "boolean", str: "string", float: "number", datetime: "date-time with UTC offset",
            AwareDatetime: "date-time with UTC offset"}

_INTRO = f"""\
# Programme reference

<!-- Generated from engine/config.py by `python -m engine.reference`; do not edit by hand. -->

A programme is one TOML file (see `config/member_day.toml`). `rekindle check FILE` validates it
and names every mistake as `file: key path: reason`; `POST /v1/config` answers the same list.
Key paths below use the same notation: `rules.<rule>.where.<field>` is the `where` table of any
rule, and tiers are named by id, `tiers[gold].xp` (by position, `tiers[2]`, when the id is
missing, invalid or shared).

- Names (event types, fields, rules, quests, tier ids, catalog items): {config.NAME_RULE}.
- Item names (`rules.<rule>.item`, the keys of `rewards.items`): {config.ITEM_RULE}.
- Values are typed: `5` is an integer, `"5"` a string; neither is converted to the other.
  Money is always integer cents; there are no float fields except `points_multiplier`.
- Unknown keys are refused, so a misspelt key never passes silently.
- Times carry a UTC offset: `2026-12-12T00:00:00+08:00`. Days and weeks (from Monday) start at
  midnight in `program.timezone`.
"""

#: The smallest useful programme, shown first. tests/engine/test_reference.py reads it back out
#: of docs/programme.md and loads it as `rekindle check` does, so the example cannot rot.
MINIMAL_PROGRAMME = """\
[program]
name = "Corner café"          # the only key [program] requires
timezone = "Asia/Shanghai"    # whose midnight starts a day (daily caps, daily quests)

[events.purchase]
fields.amount = { type = "int", min = 1, description = "order total in cents" }

[events.checkin]              # no fields: post it without `data`

[rules.purchase_xp]
event = "purchase"
grant = "xp"
per = { field = "amount", every = 100, amount = 1 }   # 1 XP per whole 100 cents

[rules.purchase_points]
event = "purchase"
grant = "points"
per = { field = "amount", every = 100, amount = 1 }
daily_cap = 500               # points a member gets from this rule per day, multiplier included

[rules.checkin_points]
event = "checkin"
grant = "points"
fixed = 5

[[tiers]]                     # at least one; the first at xp 0
id = "member"
name = "Member"
xp = 0

[[tiers]]
id = "gold"
name = "Gold"
xp = 1000
points_multiplier = 1.5
"""

_MINIMAL = f"""\
## A minimal programme

`[program]` with a `name`, at least one event type under `[events]`, and `[[tiers]]` whose first
tier is at xp 0 are required; every other section may be left out. This one earns XP and points
on purchases and points on check-ins, with a daily cap and a gold tier (`rekindle check` accepts
it: tests/engine/test_reference.py holds it to that):

```toml
{MINIMAL_PROGRAMME}```

## What the tables do not say

- **A `where` test on an optional field the event does not carry fails**, whatever the test:
  `ne` and `not_in` too. An absent field is not a value, so with `where.channel = {{ ne = "app" }}`
  an event without `channel` does not fire the rule (or move the quest). Likewise `per` on an
  absent field grants nothing, and a quest's `sum` of one does not move it.
- **`daily_cap` counts points after the tier multiplier.** A rule's points are multiplied by the
  `points_multiplier` of the tier the member holds before the event (a tier the event reaches
  applies from the next one) and rounded down; the cap then bounds that amount. Above, a gold
  member's ¥400 purchase makes 400 × 1.5 = 600 points, capped to 500. A grant that would pass the
  cap is cut to what is left of it; once it is used up the rule grants nothing until the next
  local day (of the event's `at`, in `program.timezone`). Each rule's cap is its own, per member.
  XP rules have no multiplier; `rewards` (quests, tiers) are neither multiplied nor capped.
- **Counted items are a game's, granted by the programme.** A game section declares the items
  members hold (`[games.checkin]` declares `checkin:makeup`, its make-up cards, with the most a
  member holds); a rule grants one with `grant = "item"` and `item = "checkin:makeup"` (`fixed` or
  `per`, and `daily_cap`, as for points), a quest or a tier with
  `rewards.items = {{ "checkin:makeup" = 1 }}`. An item no game section of the programme declares
  is refused, naming the items it does. A grant past the item's cap is cut to it (the member
  sees an `inventory` effect of what fitted); a rule's `daily_cap` counts only what the member
  got. **A refund takes no item back**, a rule's or a quest's (a spin may be played already), as
  it keeps a tier's rewards; it does take back the XP, points and unused coupons.
- **`data` may be omitted when the event type declares no required field**: no `data` and
  `"data": {{}}` are the same event. `"data": null` is refused (`data: must be an object`).
"""


def programme_reference() -> str:
    """The whole reference as Markdown: the limits, then one section per model."""
    out = [_INTRO, _MINIMAL, "## Limits", "", "A programme past any of these is refused, with the limit named in the error.", ""]
    out += ["| limit | value | what it bounds |", "| --- | --- | --- |"]
    out += [f"| `{name}` | {getattr(config, name):,} | {what} |" for name, what in config.LIMITS.items()]
    for model, places in _sections():
        out += ["", f"## {model.__name__}", "", inspect.cleandoc(model.__doc__ or ""), ""]
        out += ["Found at: " + ", ".join(f"`{p}`" for p in places), ""]
        out += ["| key | type | default | bounds | description |", "| --- | --- | --- | --- | --- |"]
        out += [_row(name, field) for name, field in model.model_fields.items()]
    return "\n".join(out) + "\n"


def _sections() -> list[tuple[type[BaseModel], list[str]]]:
    """Every model reachable from ``Program``, then from each installed game's section
    (``[games.<game>]``), in first-reached order, with the key paths where it sits. A root model
    (a table of named things, as a game's sales or wheels) has no keys of its own: its entries'
    model is listed instead."""
    from engine.plugins import installed  # the games' modules import engine.config

    found: dict[type[BaseModel], list[str]] = {config.Program: ["(top level)"]}
    roots = [(config.Program, "")] + [(g.section, f"games.{g.name}") for g in installed() if g.section is not None]
    for root, place in roots:  # the programme's models first, then each game's
        if place:
            found.setdefault(root, []).append(place)
        _walk(found, [(root, place)])
    return [(model, places) for model, places in found.items() if not issubclass(model, RootModel)]


def _walk(found: dict[type[BaseModel], list[str]], queue: list[tuple[type[BaseModel], str]]) -> None:
    while queue:
        model, prefix = queue.pop(0)
        for name, field in model.model_fields.items():
            is_root = issubclass(model, RootModel) and name == "root"
            key = prefix if is_root else f"{prefix}.{field.alias or name}".removeprefix(".")
            for child, place in _models_in(field.annotation, key):
                if place not in found.setdefault(child, []):
                    found[child].append(place)
                    queue.append((child, place))


def _models_in(annotation: Any, place: str) -> Iterator[tuple[type[BaseModel], str]]:
    """The models inside ``annotation`` and the key path pattern of each."""
    annotation = _bare(annotation)
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, place
    elif origin is dict:
        entry = _ENTRY.get(place.rsplit(".", 1)[-1], "<name>")
        yield from _models_in(get_args(annotation)[1], f"{place}.{entry}")
    elif origin is tuple:
        entry = "[<id>]" if place == "tiers" else "[<n>]"
        yield from _models_in(get_args(annotation)[0], place + entry)
    elif origin in (Union, types.UnionType):
        for arm in get_args(annotation):
            yield from _models_in(arm, place)


def _bare(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and without ``| None``."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
            arms = tuple(a for a in get_args(annotation) if a is not type(None))
            annotation = arms[0] if len(arms) == 1 else Union[arms]  # noqa: UP007 (a runtime union)
        else:
            return annotation


def _row(name: str, field: FieldInfo) -> str:
    cells = (
        f"`{field.alias or name}`",
        _type(field.annotation, field.metadata),
        _default(field),
        _bounds(field.metadata, _bare(field.annotation)),
        (field.description or "").replace("\n", " "),
    )
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _type(annotation: Any, metadata: list[Any] | tuple[Any, ...] = ()) -> str:
    """A designer's name for a type: "integer", "name", "array of string", "table of Condition by field"."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return _type(inner, [*metadata, *extra])
    if origin in (Union, types.UnionType) and type(None) in get_args(annotation):
        arms = tuple(a for a in get_args(annotation) if a is not type(None))
        return _type(arms[0] if len(arms) == 1 else Union[arms], metadata)  # noqa: UP007 (a runtime union)
    if annotation is str and any(getattr(m, "pattern", None) == config.NAME_PATTERN for m in _flat(metadata)):
        return "name"
    if annotation is str and any(getattr(m, "pattern", None) == config.ITEM_PATTERN for m in _flat(metadata)):
        return "item name"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(f'`"{m.value}"`' for m in annotation)
    if origin is Literal:
        return "one of " + ", ".join(f'`"{v}"`' for v in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"table: [{annotation.__name__}](#{annotation.__name__.lower()})"
    if origin is tuple:
        return f"array of {_type(get_args(annotation)[0]).removeprefix('table: ')}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"table: {_type(key)} → {_type(value).removeprefix('table: ')}"
    if origin in (Union, types.UnionType):
        return " or ".join(_type(arm) for arm in get_args(annotation))
    return str(annotation)


def _flat(metadata: Any) -> Iterator[Any]:
    """Constraint objects, including those pydantic groups inside one ``FieldInfo``."""
    for item in metadata:
        if isinstance(item, FieldInfo):
            yield from item.metadata
        else:
            yield item


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is None:
        return "not set"
    if isinstance(value, BaseModel | dict | tuple) and not value:
        return "empty"
    if isinstance(value, BaseModel) and not value.model_dump(exclude_defaults=True):
        return "empty"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f'`"{value}"`' if isinstance(value, str) else f"`{value}`"


def _bounds(metadata: list[Any], annotation: Any) -> str:
    """Numeric bounds and lengths, in the words of the errors that enforce them."""
    sized = "characters" if annotation is str else "entries"
    words = {Ge: "at least {}", Gt: "more than {}", Le: "at most {}", Lt: "less than {}"}
    out: list[str] = []
    for item in _flat(metadata):
        for kind, template in words.items():
            if isinstance(item, kind):
                out.append(template.format(_number(getattr(item, kind.__name__.lower()))))
        if isinstance(item, MinLen):
            out.append("not empty" if item.min_length == 1 else f"at least {item.min_length:,} {sized}")
        if isinstance(item, MaxLen):
            out.append(f"at most {item.max_length:,} {sized}")
    return "; ".join(out)


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":
    print(programme_reference(), end="")
