"""The published contract, tested by an outside tool: schemathesis against a real service process.

Every operation of ``GET /openapi.json`` gets generated inputs, valid and invalid, with the
credential its security scheme names (the shop's key, a member's token, the admin key), and
every answer must pass schemathesis's checks: no 5xx, a documented status code, a body and
headers that conform to the document. The service is this module's own: the fuzzed
``POST /v1/config`` must not change the programme of services other tests share.

Then the document's links are followed (schemathesis's state machine): sequences of calls whose
ids come from earlier answers.

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
from hypothesis import HealthCheck, given, seed, settings
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import negative_data_rejection

from engine.config import load_program
from realtime import openapi
from tests.realtime.conftest import ADMIN_KEY, API_KEY, EXAMPLE_CONFIG, Service, serving
from tests.realtime.test_live import member_token

EXAMPLES = int(os.environ.get("REKINDLE_SCHEMATHESIS_EXAMPLES", "20"))


@pytest.fixture(scope="module")
def fuzzed(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from serving(redis_url, tmp_path_factory.mktemp("fuzzed"))


@pytest.fixture(scope="module")
def document(fuzzed: Service) -> dict[str, Any]:
    return httpx.get(f"{fuzzed.base_url}/openapi.json").json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def api_schema(document: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_dict(document, config=CONFIG)


@pytest.fixture(scope="module")
def batch_check(document: dict[str, Any]) -> "BatchCheck":
    return BatchCheck(document)


class BatchCheck:
    """The second documented exception, and the check that replaces schemathesis's there.

    A batch is answered as a whole and judged event by event: an event that breaks the ``Event``
    schema is refused in its own result (``rejected``, ``error.field`` under ``events[i]``) while
    the valid ones apply, so one bad event does not sink a thousand good ones. schemathesis's
    negative-data check expects a 4xx for any schema-breaking request, so for a well-formed batch
    (the wrapper right, 1 to max events, not a dry run) it is replaced by this stricter one: every
    event the ``Event`` schema refuses must come back ``rejected`` in its own result, with the
    field it is about."""

    def __init__(self, document: dict[str, Any]) -> None:
        root = "urn:rekindle-openapi"
        registry = Registry().with_resource(root, Resource.from_contents(document, default_specification=DRAFT202012))
        self.event = Draft202012Validator({"$ref": f"{root}#/components/schemas/Event"}, registry=registry)
        self.max_batch = document["components"]["schemas"]["EventBatch"]["properties"]["events"]["maxItems"]

    def applies(self, case: Any) -> bool:
        body, query = case.body, case.query or {}
        return (case.operation.label == "POST /v1/events" and isinstance(body, dict) and set(body) == {"events"}
                and isinstance(body["events"], list) and 1 <= len(body["events"]) <= self.max_batch
                and set(query) <= {"dry_run"} and query.get("dry_run", "0") in ("0", "false"))

    def check(self, ctx: Any, response: Any, case: Any) -> bool | None:
        if not self.applies(case) or response.status_code in (429, 503):
            return None
        assert response.status_code == 200, f"a well-formed batch answered {response.status_code}"
        results = response.json()["results"]
        assert len(results) == len(case.body["events"])
        for i, (event, result) in enumerate(zip(case.body["events"], results)):
            if not self.event.is_valid(event):
                assert result["status"] == "rejected", f"events[{i}] breaks the Event schema but was {result['status']}"
                assert result["error"]["field"].startswith(f"events[{i}]"), result["error"]
        return None

    def call_and_validate(self, case: Any, base_url: str) -> Any:
        if self.applies(case):
            return case.call_and_validate(base_url=base_url, additional_checks=[self.check],
                                          excluded_checks=[negative_data_rejection])
        return case.call_and_validate(base_url=base_url)


#: A documented exclusion (the other is ``BatchCheck``). schemathesis expects a schema-valid request to succeed unless it
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
def test_every_operation_keeps_its_contract(label: str, api_schema: Any, fuzzed: Service, batch_check: BatchCheck) -> None:
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
        batch_check.call_and_validate(case, fuzzed.base_url)

    run()


#: The stateful run's seeds, so a run is the same sequence of calls every time. Unseeded, about 1
#: run in 12 draws sequences that follow no link; a single fixed seed broke the first time the
#: document changed. So seeds are tried in this order until a run follows a link (every run's
#: answers are checked all the same): deterministic for a given document, and one change to it
#: cannot leave the test without a linked run. ``REKINDLE_SCHEMATHESIS_SEED=<n>`` starts from n.
LINKED_SEEDS = range(int(os.environ.get("REKINDLE_SCHEMATHESIS_SEED", "18")), 10_000)[:8]


def test_linked_operations_keep_their_contract(api_schema: Any, fuzzed: Service, batch_check: BatchCheck) -> None:
    """The document's links, followed: an event, then its member's snapshot, then a coupon from
    that snapshot used, points spent, the snapshot again. Sequences of calls whose ids come from
    earlier answers reach states single generated calls almost never do (a real coupon id, a
    member with a balance); every answer along the way keeps the same checks."""
    followed: list[str] = []

    class Linked(api_schema.as_state_machine()):  # type: ignore[misc]
        def step(self, input: Any) -> Any:
            if input.transition is not None and input.is_applied:
                followed.append(f"{input.case.operation.label} via {input.transition.id}" + (" (inferred)" if input.transition.is_inferred else ""))
            return super().step(input)

        def before_call(self, case: Any) -> None:
            headers = credential(case.operation)
            if headers:
                case.headers = {**(case.headers or {}), **headers}
                case._has_explicit_auth = True

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": fuzzed.base_url}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            batch = batch_check.applies(case)
            case.validate_response(response, additional_checks=[batch_check.check] if batch else None,
                                   excluded_checks=[negative_data_rejection] if batch else None,
                                   transport_kwargs=kwargs or None, recorder=getattr(self, "recorder", None))

    for linked_seed in LINKED_SEEDS:
        seed(linked_seed)(Linked).run(settings=settings(max_examples=EXAMPLES, stateful_step_count=6, deadline=None,
                                                         suppress_health_check=list(HealthCheck), database=None))
        if followed:
            break
    assert followed, f"no link was followed under seeds {list(LINKED_SEEDS)}: the stateful run exercised nothing the single calls did not"
    print(f"links followed {len(followed)} times:", sorted(set(followed)))
