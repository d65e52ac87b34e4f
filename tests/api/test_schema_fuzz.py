"""Schemathesis against the OpenAPI schema (docs/reliability.md #32).

Every operation of the schema, as a coordinator, a monitor and a statistician, with valid and
invalid generated input (bodies, query parameters, ids, headers). Every answer must be no server
error, have a status code the schema documents for that operation, and a body and content type that
match the schema. The run is deterministic (Hypothesis derandomised) and bounded (``MAX_EXAMPLES``
per operation and role); half the generated ids are swapped for ids of the seeded study's objects so
that real records are read and written, not only 404s.

The app runs in-process (Django's WSGI handler over the test database, inside the test's
transaction); the revoke-token operation is left out because it would revoke the fuzzer's own token
(tests/api/test_first_contact.py covers it).
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

ROLES = ["coordinator", "monitor", "statistician"]
MAX_EXAMPLES = 10
MIN_CASES_PER_ROLE = 334  # three roles: at least 1,000 cases per run
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]


@pytest.fixture
def wsgi_app():
    """Django's WSGI handler that keeps the test's database connection and transaction (as Django's
    test client does: these signals would close a connection that is inside a transaction)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture(params=ROLES)
def role(request) -> str:
    return request.param


@pytest.fixture
def api_schema(api_world, wsgi_app, role):
    """The schema as the role's client loads it."""
    # Valid and invalid input; the role's token is the only credential sent (none generated).
    config = schemathesis.Config.from_dict({"generation": {"mode": "all", "with-security-parameters": False}})
    schema = schemathesis.openapi.from_wsgi(
        "/api/v1/schema/", wsgi_app, config=config, headers={"Authorization": f"Token {api_world.tokens[role]}"}
    )
    return schema


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """schemathesis 4.32's ``from_fixture`` reads ``node._nodeid``, which pytest 9.2 no longer sets."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture
def cases(request, role):
    counted = {"n": 0}
    yield counted
    request.node.user_properties.append(("cases", counted["n"]))  # in the JUnit XML report
    assert counted["n"] >= MIN_CASES_PER_ROLE, f"only {counted['n']} cases ran as {role}"


def _seeded_ids(world) -> dict[str, list[int]]:
    return {
        "/api/v1/participants/": [p.pk for p in world.participants],
        "/api/v1/visits/": [v.pk for v in world.visits],
        "/api/v1/data-cuts/": world.data_cuts,
        "/api/v1/analyses/": world.analyses,
    }


def _point_at_seeded_object(case, world) -> None:
    """Swap every second generated numeric id for the id of a seeded object of the same kind."""
    generated = str((case.path_parameters or {}).get("id", ""))
    if not generated.isascii() or not generated.isdigit() or int(generated) % 2:
        return
    for prefix, ids in _seeded_ids(world).items():
        if case.operation.path.startswith(prefix):
            case.path_parameters["id"] = str(ids[(int(generated) // 2) % len(ids)])


schema = schemathesis.pytest.from_fixture("api_schema").exclude(method="DELETE", path="/api/v1/auth/token/")


@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
@schema.parametrize()
def test_every_operation_answers_as_documented_for_each_role(case, role, api_world, cases):
    _point_at_seeded_object(case, api_world)
    cases["n"] += 1
    case.call_and_validate(headers={"Authorization": f"Token {api_world.tokens[role]}"}, checks=CHECKS)
