"""Simulated sensors: the seed's five, their value models and status thresholds, seeded and deterministic.

Sensor i of N is a copy of seed sensor ``i % 5`` with a new id (``TEMP_ENG_002``, ...); a generator that simulates
a share of a run's sensors starts at its ``sensor_offset``. Each sensor has its own
``random.Random`` seeded from (run seed, sensor id), so the same seed gives the same readings whatever the rate.

Two ways to advance the same model: ``Sensor.fill`` (one reading into a protobuf message: the reference) and
``pipeline.encoder.walk`` (many steps of many sensors of one kind at once, with numpy: the generator's fast path),
from the same constants (``BANDS``, ``STEP``, ``AXES``); both give bit-identical readings and leave each sensor in
the same state, so the two can be mixed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from pipeline.proto import pb2

OK, WARNING, CRITICAL, OFFLINE = 0, 1, 2, 4


@dataclass(frozen=True)
class SensorSpec:
    prefix: str
    number: int  # the seed's numeric suffix of copy 0
    kind: str  # TEMPERATURE | PRESSURE | VELOCITY
    subsystem: int  # pb2.System value
    unit: str
    period_s: float  # the seed's per-sensor period


SEED_SENSORS: tuple[SensorSpec, ...] = (
    SensorSpec("TEMP_ENG", 1, "TEMPERATURE", pb2.ENGINE, "celsius", 0.300),
    SensorSpec("TEMP_FUEL", 1, "TEMPERATURE", pb2.FUEL_TANK, "celsius", 0.300),
    SensorSpec("PRESS_ENG", 1, "PRESSURE", pb2.ENGINE, "bar", 0.450),
    SensorSpec("PRESS_FUEL", 2, "PRESSURE", pb2.FUEL_TANK, "bar", 0.350),
    SensorSpec("VELO_STAGE1", 1, "VELOCITY", pb2.STAGE1, "m/s", 0.350),
)


# the seed's bands as (low, high) per status, in the order band() tries them
BANDS = {
    "TEMPERATURE": ((-10, 65), (-20, 75), (-30, 85)),
    "PRESSURE": ((180, 220), (140, 260), (100, 300)),
}
STEP = {"TEMPERATURE": 10.0, "PRESSURE": 5.0, "VELOCITY": 5.0}  # each step adds uniform(-STEP, STEP)
AXES = {"TEMPERATURE": 1, "PRESSURE": 1, "VELOCITY": 3}


def band(value: float, ok: tuple[float, float], warn: tuple[float, float], crit: tuple[float, float]) -> int:
    if ok[0] <= value <= ok[1]:
        return OK
    if warn[0] <= value <= warn[1]:
        return WARNING
    if crit[0] <= value <= crit[1]:
        return CRITICAL
    return OFFLINE


def temperature_status(t: float) -> int:
    return band(t, *BANDS["TEMPERATURE"])


def pressure_status(p: float) -> int:
    return band(p, *BANDS["PRESSURE"])


def velocity_status(magnitude: float) -> int:
    if magnitude <= 12000:
        return OK
    if magnitude <= 14000:
        return WARNING
    if magnitude <= 15000:
        return CRITICAL
    return OFFLINE


@dataclass
class Sensor:
    spec: SensorSpec
    sensor_id: str
    rng: random.Random
    seq: int = 0
    state: list[float] = field(default_factory=list)

    def fill(self, msg: Any) -> None:
        """Advance the random walk one step and write the reading into ``msg`` (a TelemetryResponse)."""
        self.seq += 1
        spec, rng = self.spec, self.rng
        if spec.kind == "TEMPERATURE":
            step = STEP["TEMPERATURE"]
            self.state[0] += rng.uniform(-step, step)
            t = self.state[0]
            msg.type = pb2.TEMPERATURE
            d = msg.temperature
            d.sensor_id, d.subsystem, d.temperature, d.unit = self.sensor_id, spec.subsystem, t, spec.unit
            d.status_bitmask, d.sequence_number = temperature_status(t), self.seq
        elif spec.kind == "PRESSURE":
            step = STEP["PRESSURE"]
            self.state[0] += rng.uniform(-step, step)
            p = self.state[0]
            msg.type = pb2.PRESSURE
            d = msg.pressure
            d.sensor_id, d.subsystem, d.pressure, d.unit = self.sensor_id, spec.subsystem, p, spec.unit
            d.status_bitmask, d.sequence_number = pressure_status(p), self.seq
        else:
            s = self.state
            step = STEP["VELOCITY"]
            s[0] += rng.uniform(-step, step)
            s[1] += rng.uniform(-step, step)
            s[2] += rng.uniform(-step, step)
            msg.type = pb2.VELOCITY
            d = msg.velocity
            d.sensor_id, d.subsystem, d.unit = self.sensor_id, spec.subsystem, spec.unit
            d.velocity_x, d.velocity_y, d.velocity_z = s
            d.status_bitmask = velocity_status(math.sqrt(s[0] * s[0] + s[1] * s[1] + s[2] * s[2]))
            d.sequence_number = self.seq


def make_sensors(n: int, seed: int, offset: int = 0) -> list[Sensor]:
    """Sensors ``offset`` … ``offset + n - 1`` of the run: generators that share a run's sensors (``sensor_offset``)
    together simulate exactly the sensors, ids and values one generator would."""
    sensors = []
    for i in range(offset, offset + n):
        spec = SEED_SENSORS[i % len(SEED_SENSORS)]
        sensor_id = f"{spec.prefix}_{spec.number + i // len(SEED_SENSORS):03d}"
        start = {"TEMPERATURE": [30.0], "PRESSURE": [200.0], "VELOCITY": [8000.0, 8000.0, 8000.0]}[spec.kind]
        sensors.append(Sensor(spec, sensor_id, random.Random(f"{seed}:{sensor_id}"), 0, list(start)))
    return sensors
