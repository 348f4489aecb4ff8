"""The published contract: ``GET /openapi.json`` for the active programme, ``GET /docs`` to read it.

Public, like the page a developer reads before holding any key: they say what the API accepts,
never what it holds. The document is built once per programme version (``realtime.openapi.build``
is pure) and served from memory until another version is activated. The page is Swagger UI
(5.x, which reads OpenAPI 3.1) from the pinned ``openapi-ui-bundles`` package, served by this
service under ``/docs/static``: no CDN, so it works where the service has no internet. Its
online validator is off (``validatorUrl: null``): by default, on any host but localhost, the
page would send the document's address to validator.swagger.io for a badge.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from realtime import openapi
from realtime.http import service

import openapi_ui_bundles.swagger_ui

#: Swagger UI's own files, as the package ships them.
STATIC = StaticFiles(directory=openapi_ui_bundles.swagger_ui.static_path)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>rekindle API</title>
<link rel="stylesheet" href="docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/static/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script src="docs/static/swagger-ui-standalone-preset.js"></script>
<script>
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
    validatorUrl: null,
  });
};
</script>
</body>
</html>
"""


async def get_docs(request: Request) -> Response:
    """The page; its links are relative, so it works under a root path or behind a proxy's prefix."""
    return HTMLResponse(PAGE)


async def get_openapi(request: Request) -> Response:
    svc = service(request)
    program = svc.programs.current.program
    state = request.app.state
    cached: tuple[str, bytes] | None = getattr(state, "openapi", None)
    if cached is None or cached[0] != program.program_hash:
        cached = (program.program_hash, document_bytes(program, svc.settings.max_batch))
        state.openapi = cached
    return Response(cached[1], media_type="application/json")


def document_bytes(program: object, max_batch: int) -> bytes:
    """The document as the service serves it and ``rekindle openapi`` prints it (indented, one newline)."""
    return orjson.dumps(openapi.build(program, max_batch), option=orjson.OPT_INDENT_2) + b"\n"  # type: ignore[arg-type]
