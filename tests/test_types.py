"""The reply types are the API document's source: mypy holds every handler to them.

``realtime/openapi.py`` derives each reply's schema from the TypedDicts in ``realtime/replies.py``
and ``engine/views.py``; the handlers build their replies through the same types and answer
through ``json_response``, which takes nothing else. A reply with a key the type lacks, a key it
requires missing, or a value of another type is a mypy error here, before any request is made.
The modules checked are ``[tool.mypy] files`` in pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NotRequired, get_origin, get_type_hints

ROOT = Path(__file__).resolve().parent.parent


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_modules_that_build_replies_type_check() -> None:
    done = mypy()
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_reply_the_types_do_not_describe_is_refused(tmp_path: Path) -> None:
    """The check above can fail: the same configuration rejects a handler answering a reply with
    a misspelt key, a value of the wrong type, or a view missing a key."""
    probe = ROOT / "realtime" / f"_probe_{tmp_path.name}.py"
    probe.write_text(
        "from realtime.errors import json_response\n"
        "from realtime.replies import TokenReply\n"
        "from engine.views import TierNext\n"
        'json_response({"member": "m", "tokn": "t", "expires_at_ms": 1})\n'
        'json_response(TokenReply(member="m", token="t", expires_at_ms="soon"))\n'
        'TierNext(id="a", name="b", xp=1)\n'
    )
    try:
        done = mypy(str(probe.relative_to(ROOT)))
    finally:
        probe.unlink()
    lines = done.stdout.splitlines()
    assert done.returncode == 1
    assert any(":4: error" in line and "json_response" in line for line in lines), done.stdout
    assert any(":5: error" in line and "expires_at_ms" in line for line in lines), done.stdout
    assert any(":6: error" in line and 'Missing key "xp_to_go"' in line for line in lines), done.stdout


def test_each_routes_reply_schema_is_derived_from_its_type() -> None:
    """The document's schema for a route's reply is the type the handler builds, key for key."""
    from engine.config import load_program
    from realtime import openapi
    from realtime.schemas import OPERATIONS

    doc = openapi.build(load_program(ROOT / "config" / "member_day.toml"))
    schemas = doc["components"]["schemas"]
    named = {t for op in OPERATIONS for t in (op.reply, *op.replies.values()) if t is not None}
    assert len(named) >= 8
    for t in named:
        assert t.__module__ in ("realtime.replies", "engine.views"), t
        schema = schemas[t.__name__]
        assert set(schema["properties"]) == set(get_type_hints(t)), t.__name__
        hints = get_type_hints(t, include_extras=True)
        required = {k for k, hint in hints.items() if get_origin(hint) is not NotRequired}
        assert set(schema.get("required", ())) == required, t.__name__
