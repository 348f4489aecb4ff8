"""Every reply a test receives from a service, held to the published document.

The OpenAPI document's reply schemas are derived from the types the handlers build their replies
with (``realtime/replies.py``, ``engine/views.py``), and mypy holds the handlers to those types
(``tests/test_types.py``). What neither can see is which route answers which status with which
type, and values the types cannot express (a pattern, a bound): schemathesis checks generated
requests, and this checks every real reply the rest of the suite provokes. A status the
operation does not document, or a JSON body its schema does not describe, fails the test that
received it.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from engine.config import load_program
from realtime import openapi
from tests.conftest import EXAMPLE_CONFIG

ROOT = "urn:rekindle-openapi"


@cache
def _contract() -> tuple[list[tuple[str, re.Pattern[str], dict[str, Any]]], Registry]:
    document = openapi.build(load_program(EXAMPLE_CONFIG))
    operations = []
    for path, item in document["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
        for method, operation in item.items():
            operations.append((method.upper(), pattern, operation))
    registry = Registry().with_resource(ROOT, Resource.from_contents(document, default_specification=DRAFT202012))
    return operations, registry


def check(response: httpx.Response) -> None:
    """Fail if ``response`` is not what the document says its operation answers."""
    operations, registry = _contract()
    request = response.request
    found = next((op for method, pattern, op in operations if method == request.method and pattern.match(request.url.path)), None)
    if found is None:
        return  # not an operation of the document (an unknown path or method: 404 / 405)
    status = str(response.status_code)
    documented = found["responses"].get(status)
    where = f"{request.method} {request.url.path} answered {status}"
    assert documented is not None, f"{where}, which {found['operationId']} does not document"
    schema = documented.get("content", {}).get("application/json", {}).get("schema")
    if schema is None or not response.headers.get("content-type", "").startswith("application/json"):
        return
    ref = schema["$ref"].replace("#", ROOT + "#", 1) if "$ref" in schema else None
    validator = Draft202012Validator({"$ref": ref} if ref else schema, registry=registry)
    errors = sorted(validator.iter_errors(response.json()), key=lambda e: list(e.absolute_path))
    assert not errors, f"{where} with a body the document does not describe: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in errors[:3]
    )


def on_response(response: httpx.Response) -> None:
    response.read()
    check(response)


async def on_response_async(response: httpx.Response) -> None:
    await response.aread()
    check(response)
