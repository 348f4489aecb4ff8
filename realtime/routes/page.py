"""The member page at ``/`` (``realtime/page/``): static HTML, CSS and JavaScript, no build step,
no CDN. It is the reference client app developers copy: it reads ``GET /v1/me`` and follows
``/v1/live`` with the member token it is given (docs/member-page.md)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

FOLDER = Path(__file__).resolve().parent.parent / "page"
#: The page's script and styles under /page: index.html is not among them (it is served at / only,
#: with its headers).
STATIC = StaticFiles(directory=FOLDER / "static")

#: Everything from the service itself: no CDN, no third-party script, no frame of another site.
POLICY = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
          "script-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'")


async def get_page(request: Request) -> Response:
    # no-store: a token the page moved out of the address bar stays out of every cache.
    return FileResponse(FOLDER / "index.html", headers={"content-security-policy": POLICY, "cache-control": "no-store",
                                                        "referrer-policy": "no-referrer"})
