"""Test helpers: what the generator must have sent, recomputed in-process from the same seed."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from pipeline.proto import pb2
from pipeline.sensors import make_sensors

VALUE_COLUMNS = (
    "telemetry_type", "subsystem", "status_bitmask", "temperature", "temp_unit", "pressure", "pressure_unit",
    "leak_detected", "velocity_x", "velocity_y", "velocity_z", "velocity_unit", "vibration_magnitude",
)  # fmt: skip


def f32(x: float | None) -> float | None:
    return None if x is None else struct.unpack("f", struct.pack("f", x))[0]


def expected_readings(seed: int, sensors: int, per_sensor: dict[str, int]) -> dict[tuple[str, int], tuple[Any, ...]]:
    """(sensor_id, sequence_number) → VALUE_COLUMNS, for the first ``per_sensor[id]`` readings of each sensor."""
    out: dict[tuple[str, int], tuple[Any, ...]] = {}
    for sensor in make_sensors(sensors, seed):
        for _ in range(per_sensor.get(sensor.sensor_id, 0)):
            m = pb2.TelemetryResponse()
            sensor.fill(m)
            kind = m.WhichOneof("data")
            d = getattr(m, kind)
            subsystem = pb2.System.Name(d.subsystem)
            if kind == "temperature":
                vals = ("TEMPERATURE", subsystem, d.status_bitmask, d.temperature, d.unit,
                        None, None, None, None, None, None, None, None)  # fmt: skip
            elif kind == "pressure":
                vals = ("PRESSURE", subsystem, d.status_bitmask, None, None, d.pressure, d.unit,
                        d.leak_detected, None, None, None, None, None)  # fmt: skip
            else:
                vals = ("VELOCITY", subsystem, d.status_bitmask, None, None, None, None, None,
                        d.velocity_x, d.velocity_y, d.velocity_z, d.unit, d.vibration_mag)  # fmt: skip
            out[(d.sensor_id, d.sequence_number)] = tuple(f32(v) if isinstance(v, float) else v for v in vals)
    return out


def table_readings(conn: Any) -> dict[tuple[str, int], tuple[Any, ...]]:
    cols = ", ".join(VALUE_COLUMNS)
    rows = conn.execute(f"SELECT sensor_id, sequence_number, {cols} FROM telemetry_data").fetchall()
    # real columns come back as the shortest decimal of the float4: compare as float32
    return {(r[0], r[1]): tuple(f32(v) if isinstance(v, float) else v for v in r[2:]) for r in rows}


async def generated_messages(params: Any) -> list[Any]:
    """Every TelemetryResponse the generator's producer makes for ``params`` (a StreamParams), in order."""
    import asyncio

    from pipeline.stream import produce

    buf: asyncio.Queue[Any] = asyncio.Queue()
    await produce(params, buf)
    out = []
    while (item := buf.get_nowait()) is not None:
        out.extend(item[0].readings)
    return out


# Debian's Chromium, driven by Playwright (no browser download); the flags keep it off the closed network
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium: install it with `apt-get install -y chromium`"
)
