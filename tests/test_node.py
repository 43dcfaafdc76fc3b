"""The node's stream reader side (``pipeline.node.stream_writer``): rows onto the queue, and with ``seed_prints``
the seed processing node's two print lines per reading."""

from __future__ import annotations

import ast

import pytest

from pipeline.node import stream_writer
from pipeline.rows import COLUMNS, Row, row_to_dict


class FakeQueue:
    """Records what was put; its length grows by the rows put (one entry per reading)."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    async def put(self, rows: list[Row], progress: object = None, *, wait: bool = True) -> int:
        self.rows.extend(rows)
        return len(self.rows)

    async def wait_below_cap(self, length: int) -> None:
        pass


def _row(seq: int) -> Row:
    d = dict.fromkeys(COLUMNS)
    d.update(reading_timestamp="2024-05-01T12:00:00Z", telemetry_type="PRESSURE", sensor_id="P", sequence_number=seq)
    return tuple(d[c] for c in COLUMNS)


@pytest.mark.parametrize("seed_prints", [True, False])
async def test_seed_prints_two_lines_per_reading(seed_prints: bool, capsys: pytest.CaptureFixture[str]) -> None:
    queue = FakeQueue()
    put, room = stream_writer(queue, seed_prints=seed_prints)  # type: ignore[arg-type]
    await put([_row(1)])
    await put([_row(2), _row(3)])
    await room()
    assert queue.rows == [_row(1), _row(2), _row(3)]
    lines = capsys.readouterr().out.splitlines()
    if not seed_prints:
        assert lines == []
        return
    assert len(lines) == 6  # two per reading
    received = [ast.literal_eval(line.removeprefix("Received: ")) for line in lines if line.startswith("Received: ")]
    assert received == [row_to_dict(_row(i)) for i in (1, 2, 3)]
    assert [line for line in lines if line.startswith("Queue length")] == [
        "Queue length: 1", "Queue length: 3", "Queue length: 3"
    ]  # fmt: skip
