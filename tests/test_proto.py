"""The wire contract: the seed's messages and numbers unchanged, our additions present, stubs never stale."""

from __future__ import annotations

import filecmp
import tempfile
from pathlib import Path

from pipeline import proto
from pipeline.proto import pb2

SEED_FIELDS = {
    "TemperatureData": {"sensor_id": 1, "subsystem": 2, "temperature": 3, "unit": 4, "status_bitmask": 5,
                        "sequence_number": 6},
    "PressureData": {"sensor_id": 1, "subsystem": 2, "pressure": 3, "unit": 4, "status_bitmask": 5,
                     "leak_detected": 6, "sequence_number": 7},
    "VelocityData": {"sensor_id": 1, "subsystem": 2, "velocity_x": 3, "velocity_y": 4, "velocity_z": 5, "unit": 6,
                     "vibration_mag": 7, "status_bitmask": 8, "sequence_number": 9},
    "TelemetryResponse": {"timestamp": 1, "type": 4, "temperature": 5, "pressure": 6, "velocity": 7},
}  # fmt: skip


def test_seed_contract_unchanged() -> None:
    assert pb2.DESCRIPTOR.package == "telemetry"
    for message, fields in SEED_FIELDS.items():
        desc = pb2.DESCRIPTOR.message_types_by_name[message]
        for name, number in fields.items():
            assert desc.fields_by_name[name].number == number, (message, name)
    assert dict(pb2.System.items()) == {
        "UNKNOWN_SYSTEM": 0, "ENGINE": 1, "FUEL_TANK": 2, "AVIONICS": 3, "TURBOPUMP": 4, "GUIDANCE": 5,
        "STAGE1": 6, "STAGE2": 7,
    }  # fmt: skip
    assert dict(pb2.TelemetryType.items()) == {"UNKNOWN": 0, "TEMPERATURE": 1, "PRESSURE": 2, "VELOCITY": 3}
    response = pb2.DESCRIPTOR.message_types_by_name["TelemetryResponse"]
    assert response.fields_by_name["type"].has_presence  # `optional`
    assert [f.name for f in response.oneofs_by_name["data"].fields] == ["temperature", "pressure", "velocity"]
    rpc = pb2.DESCRIPTOR.services_by_name["TelemetryService"].methods_by_name["GetTelemetryStream"]
    assert rpc.input_type.name == "TelemetryRequest" and rpc.output_type.name == "TelemetryResponse"
    assert rpc.server_streaming and not rpc.client_streaming
    assert pb2.DESCRIPTOR.services_by_name["TelemetryService"].full_name == "telemetry.TelemetryService"


def test_additions_use_new_numbers() -> None:
    response = pb2.DESCRIPTOR.message_types_by_name["TelemetryResponse"]
    assert response.fields_by_name["intended_ns"].number not in (1, 2, 3, 4, 5, 6, 7)
    assert response.fields_by_name["sent_ns"].number not in (1, 2, 3, 4, 5, 6, 7)
    batched = pb2.DESCRIPTOR.services_by_name["TelemetryService"].methods_by_name["StreamBatches"]
    assert batched.server_streaming and batched.output_type.name == "TelemetryBatch"


def test_stubs_are_fresh_build_output() -> None:
    """The stubs in pipeline/_generated are exactly what grpcio-tools makes from proto/ now."""
    assert not proto.is_stale()
    with tempfile.TemporaryDirectory() as tmp:
        saved = proto.GENERATED
        try:
            proto.GENERATED = Path(tmp) / "_generated"
            proto.generate()
            fresh = proto.GENERATED
            for name in ("telemetry_pb2.py", "telemetry_pb2_grpc.py", "telemetry_pb2.pyi", "STAMP"):
                assert filecmp.cmp(fresh / name, saved / name, shallow=False), (
                    f"{name} is stale: run telemetry-bench proto"
                )
        finally:
            proto.GENERATED = saved
