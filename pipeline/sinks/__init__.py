"""Sink variants: write a batch of rows inside the writer's transaction. One file per variant, one line each."""

from pipeline.registry import Registry
from pipeline.sinks.base import Sink
from pipeline.sinks.copy import CopySink
from pipeline.sinks.copy_binary import CopyBinarySink
from pipeline.sinks.executemany import ExecutemanySink
from pipeline.sinks.insert import InsertSink
from pipeline.sinks.values import ValuesSink

SINKS: Registry[type[Sink]] = Registry(
    "sink",
    {
        "insert": InsertSink,  # one INSERT per row, one round trip each
        "executemany": ExecutemanySink,  # psycopg executemany (pipelined)
        "values": ValuesSink,  # multi-row INSERT ... VALUES (chunks under the 65,535-parameter limit)
        "copy": CopySink,  # seed: text COPY FROM STDIN, write_row per row
        "copy_binary": CopyBinarySink,  # binary COPY with declared types
    },
)

__all__ = ["SINKS", "Sink"]
