"""Sink variants: write a batch of rows inside the writer's transaction.

One file per variant: a module here with a ``Sink`` subclass that sets ``name`` is registered by discovery
(``pipeline.registry``); sinks elsewhere come from a ``TELEMETRY_PLUGINS`` module. Built in: ``insert`` (one INSERT
per row), ``executemany`` (psycopg's, pipelined), ``values`` (multi-row INSERT … VALUES), ``copy`` (the seed's text
COPY), ``copy_binary`` (binary COPY with declared types).
"""

from pipeline.registry import Registry
from pipeline.sinks.base import Sink

# listed from the most round trips to the fewest (a new sink needs no line here: it is listed after these)
ORDER = ("insert", "executemany", "values", "copy", "copy_binary")
SINKS: Registry[type[Sink]] = Registry("sink", package=__name__, base=Sink, order=ORDER)

__all__ = ["SINKS", "Sink"]
