"""The test suite's shared fixtures are pytest plugins under ``tests/fixtures/`` (as psycopg's test suite does):
``services`` (real PostgreSQL and Redis, local or throwaway, and the report header with their versions) and
``keys`` (a fresh schema and Redis key prefix per test)."""

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.keys"]
