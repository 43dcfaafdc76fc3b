"""schemathesis against the backend's own OpenAPI schema (in process, through ASGI), for each behaviour: whatever
the generated request, the answer is never a server error."""

from __future__ import annotations

import schemathesis
from hypothesis import settings
from schemathesis.checks import not_a_server_error

from pipeline.backend import create_app
from pipeline.config import BackendSettings

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(BackendSettings()))
seed_schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(BackendSettings(backend_behaviour="seed")))


@schema.parametrize()
@settings(max_examples=60, deadline=None)
def test_backend_openapi_never_5xx(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])


@seed_schema.parametrize()
@settings(max_examples=60, deadline=None)
def test_seed_backend_openapi_never_5xx(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
