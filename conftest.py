"""Shared pytest fixtures: real PostgreSQL and Redis (local, or throwaway ones), one schema per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from harness.services import Services, find_services
from pipeline import db


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with find_services() as found:
        print(f"\n{found.describe()}")
        yield found


@pytest.fixture
def pg_schema(services: Services) -> Iterator[str]:
    """A fresh schema holding telemetry_data, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    db.apply_schema(services.pg_dsn, schema, fresh=True)
    yield schema
    db.drop_schema(services.pg_dsn, schema)


@pytest.fixture
def queue_key() -> str:
    return f"test:{uuid.uuid4().hex[:10]}"
