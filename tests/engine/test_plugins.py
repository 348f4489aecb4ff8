"""The games the engine finds (``engine/plugins.py``): through the distribution's entry points,
named by nothing in the engine, each a ``Game`` with what it adds."""

from __future__ import annotations

import ast
from pathlib import Path

from engine.plugins import ENTRY_POINTS, Game, installed
from engine.scripts import Scripts

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_games_are_found_through_entry_points() -> None:
    """The check-in and flash-sale games are installed, as pyproject.toml's lines say, each a Game."""
    games = installed()
    assert [g.name for g in games] == ["bargain", "cards", "checkin", "flash", "lottery"]
    assert all(isinstance(g, Game) for g in games)
    assert f'[project.entry-points."{ENTRY_POINTS}"]' in (ROOT / "pyproject.toml").read_text()


def test_the_engine_imports_no_game() -> None:
    """No module of engine/ imports games (the registry is data the engine reads, not a name)."""
    offenders = []
    for path in (ROOT / "engine").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n == "games" or n.startswith("games.")]
    assert offenders == []


def test_every_games_object_script_is_loaded_with_the_engines() -> None:
    """Scripts().all() holds each installed game's object scripts (loaded, and in the start-up check)."""
    scripts = Scripts()
    for game in installed():
        for script in game.objects.values():
            assert script in scripts.all()


def test_no_game_names_a_members_keys() -> None:
    """A game changes a member only through plans for the member script, and reads one only
    through the engine's stores: nothing under games/ builds a member key."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / "games").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if ".member(" in line.replace("ctx.members", "") or "member_tag(" in line or "member_script_keys(" in line
    ]
    assert offenders == []


def test_every_games_section_is_in_the_reference_the_schema_and_the_api_document() -> None:
    """One registration, four places: docs/programme.md documents each game's section models at
    ``games.<game>``, the programme's JSON Schema describes ``games.<game>``, and /openapi.json
    has each game's routes and effect types (checked against the committed, generated files)."""
    import json

    from engine.reference import programme_reference

    reference = programme_reference()
    schema = json.loads((ROOT / "config" / "program.schema.json").read_text())
    document = json.loads((ROOT / "docs" / "openapi.json").read_text())
    effect_types = document["components"]["schemas"]["Effect"]["properties"]["type"]["enum"]
    for game in installed():
        if game.section is not None:
            assert f"Found at: `games.{game.name}" in reference, game.name
            assert game.name in json.dumps(schema["properties"]["games"]), game.name
        for route in game.routes:
            assert route.method in document["paths"][route.path], route.path
        for kind in game.effects:
            assert kind in effect_types, kind
