"""The published contract: ``GET /openapi.json``, ``rekindle openapi`` and ``docs/openapi.json``.

The document must be valid OpenAPI 3.1, the committed copy must be what the code builds for the
example programme, the service must serve its active programme's (and follow a new version),
and the events schema must accept exactly what the award path accepts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from engine.config import load_program
from engine.errors import InvalidInput
from engine.events import parse_event
from realtime import openapi
from realtime.routes.docs import document_bytes
from tests.realtime.conftest import ADMIN_KEY, EXAMPLE_CONFIG, ROOT, Service, run_cli, serving

COMMITTED = ROOT / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.build(load_program(EXAMPLE_CONFIG))


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)  # raises, naming the path, on anything invalid
    assert document["openapi"] == "3.1.0"


def test_every_route_of_the_app_is_in_the_document(document: dict[str, Any]) -> None:
    """The document lists the app's HTTP routes (the WebSocket and the dev-clock route aside: the
    first is described in prose, the second exists only under --dev-clock and is documented as such)."""
    from starlette.routing import Route

    from realtime.app import create_app
    from realtime.settings import Settings

    app = create_app(Settings(redis_url="redis://unused", dev_clock=True))
    served = {(m.lower(), r.path) for r in app.routes if isinstance(r, Route) for m in r.methods or () if m != "HEAD"}
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert served - {("get", "/openapi.json")} <= documented, sorted(served - documented)


def test_the_committed_document_is_what_the_code_builds() -> None:
    """``docs/openapi.json`` is ``rekindle openapi``'s output for the example programme (`make docs` writes it)."""
    done = run_cli("openapi", "--config", str(EXAMPLE_CONFIG.relative_to(ROOT)))
    assert done.returncode == 0, done.stderr
    assert done.stdout == COMMITTED.read_text(), "docs/openapi.json is stale: run `make docs`"


def event_validator(document: dict[str, Any]) -> Draft202012Validator:
    """A validator of one event (not a batch) against the document's own ``Event`` schema."""
    root = copy.deepcopy(document)
    registry = Registry().with_resource("urn:rekindle", Resource.from_contents(root, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": "urn:rekindle#/components/schemas/Event"}, registry=registry)

EVENTS = [
    {"id": "o-1", "member": "m-1", "type": "purchase", "data": {"amount": 19900}},
    {"id": "o-1", "member": "m-1", "type": "purchase", "data": {"amount": "19900"}},
    {"id": "o-1", "member": "m-1", "type": "purchase", "data": {}},
    {"id": "o-1", "member": "m-1", "type": "purchase", "data": {"amount": 1, "colour": "red"}},
    {"id": "o-1", "member": "m-1", "type": "no-such-type", "data": {}},
    {"id": "o 1", "member": "m-1", "type": "checkin"},
    {"id": "o-1", "member": "{m-1}", "type": "checkin"},
    {"id": "o-1", "member": "m-1", "type": "checkin", "extra": 1},
    {"id": "o-1", "member": "m-1", "type": "checkin"},
    {"id": "", "member": "m-1", "type": "checkin"},
    {"id": "o-1", "member": "m-1", "type": "purchase", "data": {"amount": True}},
    {"id": "o-1", "member": "m-1", "type": "purchase", "data": {"amount": 10**13}},
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: orjson.dumps(e).decode()[:60])
def test_the_events_schema_takes_what_the_award_path_takes(document: dict[str, Any], event: dict[str, Any]) -> None:
    program = load_program(EXAMPLE_CONFIG)
    try:
        parse_event(event, program, now_ms=1_800_000_000_000)
        accepted = True
    except InvalidInput:
        accepted = False
    errors = list(event_validator(document).iter_errors(event))
    assert (not errors) == accepted, (accepted, [e.message for e in errors])


@pytest.fixture
def own_service(redis_url: str, tmp_path: Path) -> Iterator[Service]:
    yield from serving(redis_url, tmp_path)  # its programme changes: not the session's service


def test_the_service_serves_its_active_programmes_document_and_follows_a_new_version(own_service: Service) -> None:
    """``GET /openapi.json`` needs no key and equals ``rekindle openapi`` for the active programme;
    once a programme with another event type is activated, the document declares it."""
    with httpx.Client(base_url=own_service.base_url) as client:
        served = client.get("/openapi.json")
        assert served.status_code == 200 and served.headers["content-type"] == "application/json"
        assert served.content == document_bytes(load_program(EXAMPLE_CONFIG), 1000)
        extended = EXAMPLE_CONFIG.read_text() + '\n[events.survey]\ndescription = "A survey answered"\n'
        activated = client.post("/v1/config", content=extended, headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert activated.status_code == 200, activated.text
        after = client.get("/openapi.json").json()
    assert "Event_survey" in after["components"]["schemas"]
    assert "Event_survey" not in served.json()["components"]["schemas"]


def test_the_docs_page_is_served_with_its_assets_and_no_cdn(service: Service) -> None:
    """``GET /docs`` is Swagger UI reading ``openapi.json``; every asset it loads comes from this service."""
    with httpx.Client(base_url=service.base_url) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(not a.startswith(("http:", "https:", "//")) for a in assets), assets
        assert 'url: "openapi.json"' in page.text
        for asset in assets:
            loaded = client.get("/" + asset)
            assert loaded.status_code == 200 and loaded.content, asset
        assert "SwaggerUIBundle" in client.get("/docs/static/swagger-ui-bundle.js").text


def test_every_link_leads_to_an_operation_and_fills_its_parameters(document: dict[str, Any]) -> None:
    """A link names an operation of the document and only parameters that operation declares
    (every path parameter of it), so a client generator or schemathesis can follow it."""
    by_id = {op["operationId"]: op for item in document["paths"].values() for op in item.values()}
    links = [(op["operationId"], link) for op in by_id.values() for reply in op["responses"].values()
             for link in reply.get("links", {}).values()]
    assert {"getMember", "useCoupon", "spendPoints", "getMe", "getFlashSale", "getWheel"} <= {
        link["operationId"] for _, link in links}
    for source, link in links:
        target = by_id[link["operationId"]]
        declared = {p["name"] for p in target.get("parameters", [])}
        in_path = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
        assert set(link["parameters"]) <= declared, (source, link)
        assert in_path <= set(link["parameters"]), (source, link)
        for expression in link["parameters"].values():
            assert expression.startswith(("$request.path.", "$response.body#/")), expression
