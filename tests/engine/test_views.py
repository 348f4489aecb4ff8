"""The effect data types of engine/views.py against what member.lua really writes."""

from __future__ import annotations

import re
from importlib import resources
from typing import get_args

from pydantic import TypeAdapter

from engine.views import EFFECT_DATA, Effect, EffectType

#: ``effect('xp', {amount = n, total = xp, reason = reason})``: the type and its table's keys.
_EFFECT_CALL = re.compile(r"effect\('(\w+)', \{([^}]*)\}\)")


def _emitted() -> list[tuple[str, list[str]]]:
    source = resources.files("engine").joinpath("lua/member.lua").read_text()
    calls = [(kind, re.findall(r"(\w+) =", table)) for kind, table in _EFFECT_CALL.findall(source)]
    assert len(calls) >= 15, "the pattern no longer finds member.lua's effect calls"
    return calls


def test_every_effect_member_lua_emits_has_a_type_with_exactly_its_keys() -> None:
    """Each effect('<type>', {...}) in member.lua names a type of EFFECT_DATA whose keys are the table's:
    every required key, and no key the type lacks (``tier_up`` has ``until_ms`` under a tier policy only)."""
    for kind, keys in _emitted():
        assert kind in EFFECT_DATA, f"member.lua emits {kind!r}, which engine.views does not describe"
        shape = EFFECT_DATA[kind]
        assert shape.__required_keys__ <= set(keys) <= set(shape.__annotations__), kind


def test_every_described_type_is_emitted_and_in_effect_type() -> None:
    """EFFECT_DATA is EffectType, in its order, and member.lua emits each of them (none is a phantom)."""
    assert list(EFFECT_DATA) == list(get_args(EffectType))
    # "care" is packed by engine/care.py (the gift's plan), as the games' effects are by theirs.
    assert {kind for kind, _ in _emitted()} | {"care"} == set(EFFECT_DATA)


def test_the_documents_effect_data_is_described_from_the_types() -> None:
    """The API document's description of Effect.data names every type with its keys."""
    text = TypeAdapter(Effect).json_schema()["properties"]["data"]["description"]
    for kind, shape in EFFECT_DATA.items():
        assert kind in text and "{" + ", ".join(shape.__annotations__) + "}" in text, kind
