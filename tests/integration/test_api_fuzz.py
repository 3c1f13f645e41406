"""Schemathesis against the served OpenAPI document of the live REST API.

Every operation is called with generated valid and invalid input, with a real token
that carries every scope (so the device routes and the ``{id}`` routes are reached,
not stopped at 403): no answer may be a server error, and what comes back must be what
the document says (status codes, content types, response schemas). A stateful run then
follows the document's links (create a task or a device, then use the returned id), so
the id routes are fuzzed on things that exist. Tasks and devices the fuzzer manages to
create are deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis.errors import Unsatisfiable
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from bgtasks.settings import Settings
from tests.fixtures import ApiProcess, make_token

pytestmark = pytest.mark.integration

#: Examples per operation and mode: about 1,000 requests in all.
EXAMPLES = 50
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_token(settings: Settings) -> str:
    return make_token(settings, "tasks:read", "tasks:write", "devices:write", "devices:report", name="fuzz")


@pytest.fixture(scope="module")
def api_schema(api_process: ApiProcess, fuzz_token: str) -> Iterator[Any]:
    headers = {"Authorization": f"Bearer {fuzz_token}"}

    def ids(kind: str) -> set[str]:
        return {x["id"] for x in httpx.get(f"{api_process.base}/{kind}", headers=headers, timeout=60).json()}

    before = {kind: ids(kind) for kind in ("tasks", "devices")}
    # GET /tasks/events is a stream that never ends (tests/integration/test_panel.py reads it).
    yield schemathesis.openapi.from_url(api_process.base + "/openapi.json").exclude(path="/tasks/events")
    for kind in ("tasks", "devices"):
        for made in ids(kind) - before[kind]:
            httpx.delete(f"{api_process.base}/{kind}/{made}", headers=headers, timeout=60)


def test_no_server_errors_and_answers_match_the_document(
    api_schema: Any, api_process: ApiProcess, fuzz_token: str
) -> None:
    # One Hypothesis run per operation and generation mode (Schemathesis' pytest plugin
    # does not load under pytest 9, so the operations are driven here).
    headers = {"Authorization": f"Bearer {fuzz_token}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 11
    unnegatable: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None,
                                 suppress_health_check=list(HealthCheck))
            def call(case: Any) -> None:
                response = case.call(base_url=api_process.base, headers=headers, timeout=60)
                case.validate_response(response, checks=CHECKS)

            try:
                call()
            except Unsatisfiable:
                # No parameters and no body (GET /health): nothing to make invalid.
                assert mode is GenerationMode.NEGATIVE, operation.label
                unnegatable.append(operation.label)
    assert len(unnegatable) <= 1, unnegatable


def test_linked_operations_statefully(api_schema: Any, api_process: ApiProcess, fuzz_token: str) -> None:
    """Sequences that follow the links: a created task is read, run, paused, deleted; a
    registered device is read, updated, reported for, removed. No server error anywhere."""
    headers = {"Authorization": f"Bearer {fuzz_token}"}
    doc = httpx.get(api_process.base + "/openapi.json", timeout=60).json()
    assert "get_task_tasks__task_id__get" in doc["paths"]["/tasks"]["post"]["responses"]["201"]["links"]
    assert "remove_device_devices__device_id__delete" in doc["paths"]["/devices"]["post"]["responses"]["201"]["links"]
    base = api_schema.as_state_machine()

    def ids(path: str) -> set[str]:
        resp = httpx.get(api_process.base + path, headers=headers, timeout=60)
        assert resp.status_code == 200, resp.text
        return {item["id"] for item in resp.json()}

    class Machine(base):  # type: ignore[misc, valid-type]
        # Each example starts from the same server state: what GET /devices and GET /tasks
        # answer feeds the next steps, and Hypothesis replays examples (a device or task left
        # by an earlier example made its replay draw differently: FlakyStrategyDefinition).
        def setup(self) -> None:
            super().setup()
            self.before = {path: ids(path) for path in ("/devices", "/tasks")}

        def teardown(self) -> None:
            for path, before in self.before.items():
                for extra in ids(path) - before:
                    httpx.delete(f"{api_process.base}{path}/{extra}", headers=headers, timeout=60)
            super().teardown()

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": api_process.base, "headers": headers, "timeout": 60}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    Machine.run(settings=hypothesis_settings(max_examples=40, stateful_step_count=6, deadline=None,
                                             database=None, suppress_health_check=list(HealthCheck)))
