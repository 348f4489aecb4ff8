"""The programme reference: generated from the models, committed, and complete."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from engine import config
from engine.config import load_program
from engine.errors import InvalidEvent
from engine.events import parse_event
from engine.reference import programme_reference

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "programme.md"


def _models(annotation: Any, seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """Every model reachable from ``annotation`` through fields, unions, tuples and tables."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in seen:
            seen.add(annotation)
            for field in annotation.model_fields.values():
                _models(field.annotation, seen)
        return seen
    for arg in get_args(annotation):
        _models(arg, seen)
    return seen


def _section(text: str, model: type[BaseModel]) -> str:
    start = text.index(f"\n## {model.__name__}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_committed_reference_is_the_generated_one() -> None:
    """docs/programme.md equals the generator's output (regenerate: python -m engine.reference > docs/programme.md)."""
    assert REFERENCE.read_text() == programme_reference()


def test_module_prints_the_reference() -> None:
    """`python -m engine.reference` prints exactly the reference (the regenerate command works)."""
    done = subprocess.run(
        [sys.executable, "-m", "engine.reference"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout == programme_reference()


def test_every_model_field_has_a_row_in_its_section() -> None:
    """Each model reachable from Program has a section with one row per key (aliases as written in TOML)."""
    text = programme_reference()
    models = _models(config.Program, set())
    assert {config.Program, config.ProgramInfo, config.Condition, config.Rewards, config.PerUnit} <= models
    for model in models:
        section = _section(text, model)
        for name, field in model.model_fields.items():
            assert f"\n| `{field.alias or name}` |" in section, f"{model.__name__}.{name} missing"


def test_every_limit_is_listed_with_its_value() -> None:
    """Each MAX_* constant of engine.config is in LIMITS and in the reference's limits table."""
    constants = {name for name in vars(config) if name.startswith("MAX_")}
    assert constants == set(config.LIMITS)
    text = programme_reference()
    for name in constants:
        assert f"| `{name}` | {getattr(config, name):,} |" in text


def test_bounds_and_descriptions_come_from_the_models() -> None:
    """Bounds, defaults and descriptions (starts/ends on repeating quests included) land in the reference."""
    text = programme_reference()
    tiers_row = next(line for line in text.splitlines() if line.startswith("| `tiers` |"))
    assert f"at most {config.MAX_TIERS} entries" in tiers_row
    retention = next(line for line in text.splitlines() if line.startswith("| `dedupe_retention_days` |"))
    assert "`14`" in retention and "at least 7; at most 90" in retention
    quest = _section(text, config.Quest)
    assert config.Quest.model_fields["starts"].description in quest
    assert "a daily or weekly quest still resets" in quest


def _minimal_programme_in_the_docs() -> str:
    """The TOML block under "## A minimal programme" in the committed docs/programme.md."""
    text = REFERENCE.read_text()
    section = text[text.index("\n## A minimal programme\n") :]
    section = section[: section.index("\n## ", 1)]
    (block,) = re.findall(r"^```toml\n(.*?)^```$", section, re.M | re.S)
    return block


def test_the_minimal_programme_in_the_docs_passes_rekindle_check(tmp_path: Path) -> None:
    """The docs' minimal programme loads as `rekindle check` loads a file: valid, compiled, rules and tiers as shown."""
    path = tmp_path / "minimal.toml"
    path.write_text(_minimal_programme_in_the_docs())
    program = load_program(path)  # what `rekindle check` runs; raises ConfigError naming each mistake
    assert set(program.events) == {"purchase", "checkin"}
    assert [t.id for t in program.tiers] == ["member", "gold"]
    assert {r.id: r.daily_cap for rules in program.rules_by_event.values() for r in rules} == {
        "purchase_xp": 0, "purchase_points": 500, "checkin_points": 0,
    }


def test_the_minimal_programme_takes_a_checkin_without_data(tmp_path: Path) -> None:
    """As the docs say: a type without fields takes no `data` (or `{}`, the same event) and refuses `null`."""
    path = tmp_path / "minimal.toml"
    path.write_text(_minimal_programme_in_the_docs())
    program = load_program(path)
    now_ms = 1_780_000_000_000
    bare = parse_event({"id": "c-1", "member": "m-1", "type": "checkin"}, program, now_ms)
    empty = parse_event({"id": "c-1", "member": "m-1", "type": "checkin", "data": {}}, program, now_ms)
    assert bare.data == {} and bare.fingerprint == empty.fingerprint
    with pytest.raises(InvalidEvent, match="must be an object"):
        parse_event({"id": "c-2", "member": "m-1", "type": "checkin", "data": None}, program, now_ms)
