"""The one in-process shape of a reading: a tuple in table column order (``COLUMNS``).

Decoders produce rows, queues carry rows, sinks write rows, forwarders send rows. The first 16 columns are the
seed's flat reading (its JSON keys and table columns); the last three are the harness's timing stamps.
"""

from __future__ import annotations

from typing import Any

Row = tuple[Any, ...]

SEED_COLUMNS: tuple[str, ...] = (
    "reading_timestamp",  # ISO-8601 string as on the wire (PostgreSQL parses it)
    "telemetry_type",  # 'TEMPERATURE' | 'PRESSURE' | 'VELOCITY'
    "sensor_id",
    "subsystem",  # System enum name
    "sequence_number",
    "status_bitmask",
    "temperature",
    "temp_unit",
    "pressure",
    "pressure_unit",
    "leak_detected",
    "velocity_x",
    "velocity_y",
    "velocity_z",
    "velocity_unit",
    "vibration_magnitude",
)
TIMING_COLUMNS: tuple[str, ...] = ("intended_ns", "sent_ns", "ingested_ns")
COLUMNS: tuple[str, ...] = SEED_COLUMNS + TIMING_COLUMNS

# PostgreSQL types of COLUMNS for binary COPY. Enums travel as text: enum_recv reads the label's bytes.
PG_TYPES: tuple[str, ...] = (
    "timestamptz", "text", "text", "text", "int4", "int2",
    "float4", "text", "float4", "text", "bool",
    "float4", "float4", "float4", "text", "float4",
    "int8", "int8", "int8",
)  # fmt: skip

IDX = {name: i for i, name in enumerate(COLUMNS)}
INTENDED = IDX["intended_ns"]


def row_to_dict(row: Row) -> dict[str, Any]:
    """The seed's flat JSON object (plus timing keys) for one row."""
    return dict(zip(COLUMNS, row, strict=True))


def dict_to_row(d: dict[str, Any]) -> Row:
    """Inverse of row_to_dict; missing keys (e.g. a seed client's body without timing keys) become None."""
    return tuple(d.get(c) for c in COLUMNS)
