"""Decoders: MessageToDict and direct reads give the same rows; bad messages are refused with a reason."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.decoders import DECODERS, DecodeError
from pipeline.proto import pb2
from pipeline.rows import COLUMNS
from pipeline.stream import StreamParams
from tests.helpers import f32, generated_messages


def _messages(count: int = 300) -> list[pb2.TelemetryResponse]:
    return asyncio.run(generated_messages(StreamParams(max_rate=True, count=count, readings_per_message=50)))


def _norm(row: tuple) -> tuple:
    return tuple(f32(v) if isinstance(v, float) else v for v in row)


def test_dict_and_direct_agree() -> None:
    msgs = _messages()
    for m in msgs:
        m.sent_ns = m.intended_ns + 1000
    a = DECODERS["dict"]().decode_many(msgs, 7)
    b = DECODERS["direct"]().decode_many(msgs, 7)
    assert len(a) == len(b) == len(msgs)
    assert [_norm(r) for r in a] == [_norm(r) for r in b]
    assert all(len(r) == len(COLUMNS) for r in a)
    kinds = {r[1] for r in a}
    assert kinds == {"TEMPERATURE", "PRESSURE", "VELOCITY"}
    # zero-valued fields are present, not dropped (always_print_fields_with_no_presence)
    assert any(r[COLUMNS.index("status_bitmask")] == 0 for r in a)
    assert all(r[COLUMNS.index("intended_ns")] + 1000 == r[COLUMNS.index("sent_ns")] for r in a)


@pytest.mark.parametrize("name", ["dict", "direct"])
def test_bad_messages_are_refused_with_a_reason(name: str) -> None:
    decoder = DECODERS[name]()
    empty = pb2.TelemetryResponse(timestamp="2026-01-01T00:00:00.000000Z")
    with pytest.raises(DecodeError, match="no temperature"):
        decoder.decode(empty, 0)
    unknown_system = pb2.TelemetryResponse(timestamp="2026-01-01T00:00:00.000000Z")
    unknown_system.temperature.sensor_id = "X"
    unknown_system.temperature.subsystem = 0
    with pytest.raises(DecodeError, match="subsystem"):
        decoder.decode(unknown_system, 0)
    no_ts = _messages(1)[0]
    no_ts.timestamp = ""
    with pytest.raises(DecodeError, match="timestamp"):
        decoder.decode(no_ts, 0)
    # decode_many skips them and says why, keeping the good ones
    errors: list[str] = []
    rows = decoder.decode_many([empty, *_messages(3), unknown_system], 0, errors)
    assert len(rows) == 3 and len(errors) == 2


def test_unknown_decoder_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown decoder 'fast'; valid decoders: dict, direct"):
        DECODERS["fast"]
