"""The published contract, tested by an outside tool: schemathesis against a real service process.

Every operation of ``GET /openapi.json`` gets generated inputs, valid and invalid, with the
credential its security scheme names (the shop's key, a member's token, the admin key), and
every answer must pass schemathesis's checks: no 5xx, a documented status code, a body and
headers that conform to the document. The service is this module's own: the fuzzed
``POST /v1/config`` must not change the programme of services other tests share.

A bounded number of examples per operation keeps this inside ``make test``'s budget;
``make test-slow`` runs the same with many more (``REKINDLE_SCHEMATHESIS_EXAMPLES``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from hypothesis import HealthCheck, given, settings

from engine.config import load_program
from realtime import openapi
from tests.realtime.conftest import ADMIN_KEY, API_KEY, EXAMPLE_CONFIG, Service, serving
from tests.realtime.test_live import member_token

EXAMPLES = int(os.environ.get("REKINDLE_SCHEMATHESIS_EXAMPLES", "20"))


@pytest.fixture(scope="module")
def fuzzed(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from serving(redis_url, tmp_path_factory.mktemp("fuzzed"))


@pytest.fixture(scope="module")
def api_schema(fuzzed: Service) -> Any:
    document = httpx.get(f"{fuzzed.base_url}/openapi.json").json()
    return schemathesis.openapi.from_dict(document, config=CONFIG)


#: One documented exclusion. schemathesis expects a schema-valid request to succeed unless it
#: answers 401, 403, 404, 409 or 429; this API also answers 422 for a well-formed request that a
#: rule no schema can state refuses: an event outside the dedupe window or beyond the clock skew
#: (it depends on when it is sent), a refund of an event never seen, a calendar date that does not
#: exist ("02-31"), a programme that does not validate. Each is a 422 naming the field.
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]}}}
)


CREDENTIALS = {"shop": API_KEY, "admin": ADMIN_KEY}


def credential(operation: Any) -> dict[str, str]:
    """The Authorization header of the operation's own security scheme (none for public ones)."""
    for requirement in operation.definition.raw.get("security", []):
        for scheme in requirement:
            token = member_token("fuzzed-member") if scheme == "member" else CREDENTIALS[scheme]
            return {"Authorization": f"Bearer {token}"}  # as the scheme names it: its probes remove it by name
    return {}


#: Every operation of the document, by its label ("POST /v1/events"): read from the code's own
#: document, which the test below checks is the one the service serves.
LABELS = [
    f"{method.upper()} {path}"
    for path, item in openapi.build(load_program(EXAMPLE_CONFIG))["paths"].items()
    for method in item
]


@pytest.mark.parametrize("label", LABELS)
def test_every_operation_keeps_its_contract(label: str, api_schema: Any, fuzzed: Service) -> None:
    # Driven through hypothesis directly: schemathesis's pytest plugin does not load on pytest 9.
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served document"

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        headers = credential(operation)
        if headers:
            case.headers = {**(case.headers or {}), **headers}
            # Marked as real credentials (schemathesis's own flag for an auth provider's): its auth
            # check then sends the request again without them and with wrong ones, expecting 401.
            case._has_explicit_auth = True
        case.call_and_validate(base_url=fuzzed.base_url)

    run()
