"""Each sink writes every row exactly once with the values it was given, in one transaction."""

from __future__ import annotations

import psycopg
import pytest

from pipeline import db
from pipeline.decoders import DECODERS
from pipeline.generator import StreamParams
from pipeline.services import Services
from pipeline.sinks import SINKS
from tests.helpers import expected_readings, generated_messages, table_readings


async def _rows(count: int, seed: int = 5) -> list[tuple]:
    msgs = await generated_messages(StreamParams(max_rate=True, count=count, seed=seed, readings_per_message=500))
    return DECODERS["direct"]().decode_many(msgs, 123)


@pytest.mark.parametrize("sink_name", list(SINKS))
async def test_sink_writes_exact_values(sink_name: str, services: Services, pg_schema: str) -> None:
    rows = await _rows(4000)
    conn = await db.connect(services.pg_dsn, pg_schema)
    try:
        async with conn.transaction():
            await SINKS[sink_name]().write(conn, rows)
    finally:
        await conn.close()
    with db.connect_sync(services.pg_dsn, pg_schema) as sync:
        got = table_readings(sync)
        stamps = sync.execute(
            "SELECT count(*) FILTER (WHERE intended_ns IS NULL OR ingested_ns <> 123), "
            "count(DISTINCT inserted_at), min(reading_timestamp) > now() - interval '1 hour' FROM telemetry_data"
        ).fetchone()
    per_sensor: dict[str, int] = {}
    for r in rows:
        per_sensor[r[2]] = per_sensor.get(r[2], 0) + 1
    assert got == expected_readings(5, 5, per_sensor)
    assert stamps is not None
    assert stamps[0] == 0
    assert stamps[1] > 1  # clock_timestamp() per row, not one now() per transaction
    assert stamps[2] is True


async def test_failed_batch_leaves_nothing(services: Services, pg_schema: str) -> None:
    rows = await _rows(100)
    bad = [*rows[:50], (*rows[50][:3], "NOT_A_SYSTEM", *rows[50][4:]), *rows[51:]]
    conn = await db.connect(services.pg_dsn, pg_schema)
    try:
        with pytest.raises(psycopg.Error):
            async with conn.transaction():
                await SINKS["copy"]().write(conn, bad)
    finally:
        await conn.close()
    assert db.table_counts(services.pg_dsn, pg_schema).rows == 0
