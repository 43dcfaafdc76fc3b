"""Inputs shared by the micro-benchmarks: real generator messages, decoded rows (built once per session)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.decoders import DECODERS
from pipeline.stream import StreamParams, produce


def generated_batches(count: int, per_message: int = 100, sensors: int = 50) -> list[Any]:
    """The TelemetryBatch messages the generator's producer makes for ``count`` readings at max rate."""

    async def run() -> list[Any]:
        buf: asyncio.Queue[Any] = asyncio.Queue()
        params = StreamParams(max_rate=True, count=count, sensors=sensors, readings_per_message=per_message)
        await produce(params, buf)
        out = []
        while (item := buf.get_nowait()) is not None:
            out.append(item[0])
        return out

    return asyncio.run(run())


@pytest.fixture(scope="session")
def batches() -> list[Any]:
    """10,000 readings as 100 TelemetryBatch messages of 100 (the default matrix's readings_per_message)."""
    return generated_batches(10_000)


@pytest.fixture(scope="session")
def messages(batches: list[Any]) -> list[Any]:
    """The first 1,000 readings as TelemetryResponse messages."""
    return [m for b in batches for m in b.readings][:1000]


@pytest.fixture(scope="session")
def rows(batches: list[Any]) -> list[tuple[Any, ...]]:
    """10,000 rows, decoded with the direct decoder (as the writer receives them)."""
    return DECODERS["direct"]().decode_many([m for b in batches for m in b.readings], 1)
