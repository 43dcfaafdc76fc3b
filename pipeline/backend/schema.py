"""The reading's schema, defined once (``COLUMN_SPECS``), and the request bodies derived from it.

``COLUMN_SPECS`` gives each column of ``pipeline.rows.COLUMNS`` its value type and the reading type that carries
it. Two shapes are derived from it:

- ``TemperatureReading`` / ``PressureReading`` / ``VelocityReading``: TypedDicts, not models, for the fast
  behaviour. pydantic-core validates straight into dicts, so there is no model → dict step before encoding, and a
  reading comes out with exactly the keys it came in with (a seed body's nulls included), in table order. The
  other types' fields may be absent or null, nothing else (``extra="forbid"``).
- ``SEED_MODELS``: pydantic models of the seed's discriminated union (the ``seed`` behaviour). Like the seed's, they
  ignore unknown keys (the other types' nulls included) and ``model_dump_json()`` gives the type's own fields.

Bounds follow the wire (int32 sequence, uint32 bitmask) and the table (varchar lengths). Lax mode (pydantic's
default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, Union, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model, model_validator, with_config
from typing_extensions import TypedDict

from pipeline.rows import COLUMNS

MAX_BATCH = 10_000
"""Readings per POST /telem_data/batch (a reading is ~350 bytes of JSON: 10 000 fit the default 8 MiB)."""
MAX_LATENCIES = 100_000
"""Values per POST /latency ``latencies``."""

TELEMETRY_TYPES = ("TEMPERATURE", "PRESSURE", "VELOCITY")

ISO_8601 = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}(:?\d{2})?)?$"

Timestamp = Annotated[str, Field(pattern=ISO_8601, max_length=40)]
SensorId = Annotated[str, Field(max_length=50)]
Unit = Annotated[str, Field(max_length=10)]
Subsystem = Literal["UNKNOWN_SYSTEM", "ENGINE", "FUEL_TANK", "AVIONICS", "TURBOPUMP", "GUIDANCE", "STAGE1", "STAGE2"]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
UInt32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


@dataclass(frozen=True)
class Column:
    """One column of a reading: its value type, the reading type that carries it, and whether it may be left out."""

    type: Any
    owner: str | None = None  # a TELEMETRY_TYPES name, or None: every reading carries it
    optional: bool = False  # may be absent or null in its owner's reading


DISCRIMINATOR = "telemetry_type"

COLUMN_SPECS: dict[str, Column] = {
    "reading_timestamp": Column(Timestamp),
    DISCRIMINATOR: Column(str),  # Literal[the reading's type] in each shape
    "sensor_id": Column(SensorId),
    "subsystem": Column(Subsystem),
    "sequence_number": Column(Int32),
    "status_bitmask": Column(UInt32),
    "temperature": Column(float, "TEMPERATURE"),
    "temp_unit": Column(Unit, "TEMPERATURE"),
    "pressure": Column(float, "PRESSURE"),
    "pressure_unit": Column(Unit, "PRESSURE"),
    "leak_detected": Column(bool, "PRESSURE", optional=True),
    "velocity_x": Column(float, "VELOCITY"),
    "velocity_y": Column(float, "VELOCITY"),
    "velocity_z": Column(float, "VELOCITY"),
    "velocity_unit": Column(Unit, "VELOCITY"),
    "vibration_magnitude": Column(float, "VELOCITY", optional=True),
    # the harness's timing stamps (not the seed's): optional everywhere
    "intended_ns": Column(Int64, optional=True),
    "sent_ns": Column(Int64, optional=True),
    "ingested_ns": Column(Int64, optional=True),
}
if tuple(COLUMN_SPECS) != COLUMNS:  # pragma: no cover - a programming error, caught at import
    raise RuntimeError("COLUMN_SPECS must list pipeline.rows.COLUMNS, in order")


def _typed_dict(kind: str) -> Any:
    """The fast behaviour's reading of one type: every column, the other types' as absent-or-null."""
    fields: dict[str, Any] = {}
    for name, col in COLUMN_SPECS.items():
        if name == DISCRIMINATOR:
            fields[name] = Literal[kind]
        elif col.owner in (None, kind):
            fields[name] = NotRequired[col.type | None] if col.optional else col.type
        else:
            fields[name] = NotRequired[None]
    td = cast(Any, TypedDict)(f"{kind.title()}Reading", fields)
    return with_config(ConfigDict(extra="forbid"))(td)


def _seed_model(kind: str) -> type[BaseModel]:
    """The seed behaviour's model of one type: its own columns only, unknown keys ignored (pydantic's default)."""
    fields: dict[str, Any] = {}
    for name, col in COLUMN_SPECS.items():
        if name == DISCRIMINATOR:
            fields[name] = (Literal[kind], ...)
        elif col.owner in (None, kind):
            fields[name] = (col.type | None, None) if col.optional else (col.type, ...)
    return cast(type[BaseModel], create_model(f"Seed{kind.title()}Reading", **fields))


READING_TYPES: tuple[Any, ...] = tuple(_typed_dict(k) for k in TELEMETRY_TYPES)
TemperatureReading, PressureReading, VelocityReading = READING_TYPES
Reading: Any = Annotated[Union[READING_TYPES], Field(discriminator=DISCRIMINATOR)]  # noqa: UP007 - built at runtime
READING: TypeAdapter[Any] = TypeAdapter(Reading)
READINGS: TypeAdapter[Any] = TypeAdapter(Annotated[list[Reading], Field(max_length=MAX_BATCH)])

SEED_MODELS: tuple[type[BaseModel], ...] = tuple(_seed_model(k) for k in TELEMETRY_TYPES)
SeedReading: Any = Annotated[Union[SEED_MODELS], Field(discriminator=DISCRIMINATOR)]  # noqa: UP007
"""The seed's body: FastAPI validates it into one of ``SEED_MODELS``."""

NonNegativeSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class LatencyReport(BaseModel):
    """The seed page's ``{"latency": s}``, or a batch ``{"latencies": [s, ...]}`` (both may be given)."""

    latency: NonNegativeSeconds | None = None
    latencies: Annotated[list[NonNegativeSeconds], Field(max_length=MAX_LATENCIES)] | None = None

    @model_validator(mode="after")
    def _one_given(self) -> LatencyReport:
        if self.latency is None and not self.latencies:
            raise ValueError("give 'latency' (seconds) or 'latencies' (a list of seconds)")
        return self


# --- OpenAPI: the handlers validate raw bodies themselves (for speed), so their schemas are declared by hand ---

REF = "#/components/schemas/{model}"
SCHEMA_DEFS: dict[str, Any] = {}  # the bodies' shared definitions, published under components/schemas


def body(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI requestBody for a JSON schema (``openapi_extra``); its $defs go to SCHEMA_DEFS."""
    SCHEMA_DEFS.update(schema.pop("$defs", {}))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
