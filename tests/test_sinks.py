"""Each sink writes every row exactly once with the values it was given, in one transaction."""

from __future__ import annotations

import psycopg
import pytest

from harness.services import Services
from pipeline import db
from pipeline.decoders import DECODERS
from pipeline.sinks import SINKS
from pipeline.stream import StreamParams
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


@pytest.mark.parametrize("sink_name", ["copy_binary", "executemany"])
async def test_dedupe_makes_a_redelivered_batch_harmless(sink_name: str, services: Services, pg_schema: str) -> None:
    """At-least-once delivery + idempotent writes: the same rows committed twice are in the table once."""
    from pipeline import db as dbm
    from pipeline.config import WriterSettings
    from pipeline.wiring import make_sink
    from pipeline.writer import Writer

    dbm.apply_schema(services.pg_dsn, pg_schema, fresh=True, unique=True)
    rows = await _rows(3000, seed=9)
    settings = WriterSettings(sink=sink_name, dedupe=True, pg_dsn=services.pg_dsn, db_schema=pg_schema)
    writer = Writer(
        None,  # type: ignore[arg-type]  # _commit needs no queue
        make_sink(settings),
        lambda: dbm.connect(services.pg_dsn, pg_schema),
        batch_size=1000,
        flush_interval=1.0,
        dedupe=True,
    )
    try:
        await writer._commit(rows[:2000])
        await writer._commit(rows[1000:])  # half of it a redelivery
    finally:
        if writer.conn is not None:
            await writer.conn.close()
    counts = dbm.table_counts(services.pg_dsn, pg_schema)
    assert counts.rows == counts.distinct == 3000
    with dbm.connect_sync(services.pg_dsn, pg_schema) as conn:
        per_sensor = dict(conn.execute("SELECT sensor_id, count(*) FROM telemetry_data GROUP BY 1").fetchall())
        assert table_readings(conn) == expected_readings(9, 5, per_sensor)
