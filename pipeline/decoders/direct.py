"""Direct field reads into the row tuple: what the seed's author wanted instead of MessageToDict."""

from __future__ import annotations

from typing import Any

from pipeline.decoders.base import DecodeError, Decoder
from pipeline.proto import pb2
from pipeline.rows import Row

_SYSTEMS: dict[int, str] = {v: k for k, v in pb2.System.items() if v != 0}


class DirectDecoder(Decoder):
    name = "direct"

    def decode(self, msg: Any, ingested_ns: int) -> Row:
        which = msg.WhichOneof("data")
        ts = msg.timestamp
        if not ts:
            raise DecodeError("message without a timestamp")
        if which == "temperature":
            t = msg.temperature
            return (
                ts, "TEMPERATURE", t.sensor_id, _system(t.subsystem), t.sequence_number, t.status_bitmask,
                t.temperature, t.unit, None, None, None, None, None, None, None, None,
                msg.intended_ns, msg.sent_ns, ingested_ns,
            )  # fmt: skip
        if which == "pressure":
            p = msg.pressure
            return (
                ts, "PRESSURE", p.sensor_id, _system(p.subsystem), p.sequence_number, p.status_bitmask,
                None, None, p.pressure, p.unit, p.leak_detected, None, None, None, None, None,
                msg.intended_ns, msg.sent_ns, ingested_ns,
            )  # fmt: skip
        if which == "velocity":
            v = msg.velocity
            return (
                ts, "VELOCITY", v.sensor_id, _system(v.subsystem), v.sequence_number, v.status_bitmask,
                None, None, None, None, None, v.velocity_x, v.velocity_y, v.velocity_z, v.unit, v.vibration_mag,
                msg.intended_ns, msg.sent_ns, ingested_ns,
            )  # fmt: skip
        raise DecodeError("message with no temperature, pressure or velocity data")


def _system(value: int) -> str:
    try:
        return _SYSTEMS[value]
    except KeyError:
        raise DecodeError(f"unknown subsystem {value!r}") from None
