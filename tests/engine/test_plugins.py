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
    assert [g.name for g in games] == ["checkin", "flash"]
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
