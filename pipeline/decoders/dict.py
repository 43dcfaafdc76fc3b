"""The seed's decoder: ``MessageToDict(..., always_print_fields_with_no_presence=True)``, then a remap."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from pipeline.decoders.base import DecodeError, Decoder
from pipeline.rows import Row


class DictDecoder(Decoder):
    name = "dict"

    def decode(self, msg: Any, ingested_ns: int) -> Row:
        d = MessageToDict(msg, always_print_fields_with_no_presence=True)
        ts = d.get("timestamp")
        # int64 fields come back as strings from MessageToDict
        intended, sent = int(d.get("intendedNs", 0)), int(d.get("sentNs", 0))
        if not ts:
            raise DecodeError("message without a timestamp")
        try:
            if (t := d.get("temperature")) is not None:
                return (
                    ts, "TEMPERATURE", t["sensorId"], _system(t["subsystem"]), t["sequenceNumber"],
                    t["statusBitmask"], _f(t["temperature"]), t["unit"],
                    None, None, None, None, None, None, None, None,
                    intended, sent, ingested_ns,
                )  # fmt: skip
            if (p := d.get("pressure")) is not None:
                return (
                    ts, "PRESSURE", p["sensorId"], _system(p["subsystem"]), p["sequenceNumber"],
                    p["statusBitmask"], None, None, _f(p["pressure"]), p["unit"], p["leakDetected"],
                    None, None, None, None, None,
                    intended, sent, ingested_ns,
                )  # fmt: skip
            if (v := d.get("velocity")) is not None:
                return (
                    ts, "VELOCITY", v["sensorId"], _system(v["subsystem"]), v["sequenceNumber"],
                    v["statusBitmask"], None, None, None, None, None,
                    _f(v["velocityX"]), _f(v["velocityY"]), _f(v["velocityZ"]), v["unit"], _f(v["vibrationMag"]),
                    intended, sent, ingested_ns,
                )  # fmt: skip
        except KeyError as exc:
            raise DecodeError(f"reading without field {exc}") from None
        raise DecodeError("message with no temperature, pressure or velocity data")


def _f(value: Any) -> Any:
    """MessageToDict writes non-finite floats as the JSON strings "Infinity", "-Infinity", "NaN"."""
    return float(value) if isinstance(value, str) else value


def _system(name: Any) -> str:
    if not isinstance(name, str) or name == "UNKNOWN_SYSTEM":
        raise DecodeError(f"unknown subsystem {name!r}")
    return name
