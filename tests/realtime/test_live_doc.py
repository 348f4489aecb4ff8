"""docs/live-feed.md: its frame table is generated from the effect types, its Python example runs."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.plugins import effect_data, installed
from realtime.live_doc import BEGIN, END, frame_table, with_table
from tests.realtime.conftest import Service, purchase, unique
from tests.realtime.test_docs_page import CHROMIUM, HOST, browser  # noqa: F401 (browser: a fixture)
from tests.realtime.test_live import WAIT_S, frames_of, member_token, post

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "live-feed.md"


def test_the_committed_frame_table_is_the_generated_one() -> None:
    """docs/live-feed.md holds the table the types give (regenerate: python -m realtime.live_doc docs/live-feed.md)."""
    page = PAGE.read_text()
    assert with_table(page) == page, "the frame table is stale: run `make docs`"


def test_every_effect_type_and_key_has_its_row() -> None:
    """Each effect type of engine.views has one row, naming every key of its data."""
    rows = {line.split("|")[1].strip(): line for line in frame_table().splitlines()[2:]}
    every = effect_data(installed())  # the engine's types, then the games'
    assert list(rows) == [f"`{kind}`" for kind in every]
    for kind, shape in every.items():
        for key in shape.__annotations__:
            assert f"`{key}` (" in rows[f"`{kind}`"], (kind, key)


def test_the_module_rewrites_a_stale_table_and_nothing_else(tmp_path: Path) -> None:
    """`python -m realtime.live_doc FILE` replaces what lies between the markers and keeps the rest."""
    stale = tmp_path / "live-feed.md"
    stale.write_text(f"# before\n{BEGIN}\n| `xp` | old |\n{END}\nafter\n")
    done = subprocess.run([sys.executable, "-m", "realtime.live_doc", str(stale)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert "rewritten" in done.stdout
    assert stale.read_text() == f"# before\n{BEGIN}\n{frame_table()}{END}\nafter\n"


def _python_example() -> dict[str, Any]:
    """The page's Python example, run as a module would be."""
    (code,) = re.findall(r"^## A Python app\n.*?^```python\n(.*?)^```$", PAGE.read_text(), re.M | re.S)
    namespace: dict[str, Any] = {"__name__": "live_feed_example"}
    exec(compile(code, str(PAGE), "exec"), namespace)
    return namespace


def test_the_python_example_follows_the_feed_and_resumes_after_a_restart(service: Service, tmp_path: Path) -> None:
    """The documented app draws the snapshot, shows each new effect, and after a restart shows only what came since."""
    follow = _python_example()["follow"]
    member, saved = unique("m"), tmp_path / "last-feed-id"
    token = member_token(member)

    async def run_app(expected: list[dict[str, Any]], post_after_draw: list[dict[str, Any]],
                      http: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Run the app until it has saved the last expected id, then stop it as a restart would."""
        drawn: list[dict[str, Any]] = []
        shown: list[dict[str, Any]] = []
        progress = asyncio.Event()

        def draw(snapshot: dict[str, Any]) -> None:
            drawn.append(snapshot)
            progress.set()

        def show(frame: dict[str, Any]) -> None:
            shown.append(frame)
            progress.set()

        app = asyncio.create_task(follow(service.base_url, token, saved, draw, show))
        try:
            async with asyncio.timeout(WAIT_S):
                if post_after_draw:  # after the snapshot: the feed owes these to the app
                    while not drawn:
                        await progress.wait()
                        progress.clear()
                    expected += frames_of(await post(http, *post_after_draw))
                while not (saved.exists() and saved.read_text() == expected[-1]["id"]):
                    await progress.wait()
                    progress.clear()
        finally:
            app.cancel()
            await asyncio.gather(app, return_exceptions=True)
        return drawn, shown

    async def main() -> None:
        async with service.async_client() as http:
            before = frames_of(await post(http, purchase(member, 500)))  # in the first snapshot
            first: list[dict[str, Any]] = []
            drawn, shown = await run_app(first, [purchase(member, 19900)], http)
            assert [d["feed_id"] for d in drawn] == [before[-1]["id"]]
            assert shown == first

            later = frames_of(await post(http, purchase(member, 300), purchase(member, 400)))  # the app is down
            drawn, shown = await run_app(later, [], http)
            assert drawn == []
            assert shown == later

    asyncio.run(main())


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (see tests/realtime/test_docs_page.py)")
def test_the_browser_example_follows_the_feed_with_first_frame_auth(service: Service, browser: Any) -> None:
    """In Chromium, the page's JavaScript example draws the snapshot, authenticates in its first frame, shows each new effect."""
    (code,) = re.findall(r"^## A browser\n.*?^```js\n(.*?)^```$", PAGE.read_text(), re.M | re.S)
    member = unique("m")
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        page.goto(f"{service.base_url.replace('127.0.0.1', HOST)}/healthz")  # the service's own origin
        page.add_script_tag(content=code)
        page.evaluate("""token => {
            window.drawn = []; window.shown = [];
            follow(location.origin, async () => token, me => drawn.push(me), frame => shown.push(frame));
        }""", member_token(member))
        page.wait_for_function("window.drawn.length === 1", timeout=WAIT_S * 1000)
        reply = service.client().post("/v1/events", json={"events": [purchase(member, 19900), purchase(member, 500)]})
        expected = frames_of(reply.json()["results"])
        page.wait_for_function(f"window.shown.length >= {len(expected)}", timeout=WAIT_S * 1000)
        assert page.evaluate("window.drawn")[0]["feed_id"] == "0-0"
        assert page.evaluate("window.shown") == expected
    finally:
        page.close()
    assert not problems, problems

