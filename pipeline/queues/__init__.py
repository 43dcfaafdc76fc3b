"""Queue variants between ingest and the writer (and ingest/writer and the forwarder in ``split``).

Every variant has the same shape (``pipeline.queues.base.Queue``): ``put(rows)``, ``get(max, timeout) ->
(rows, ack)``, ``ack(token)``, and owns its payload encoding. One file per variant, one line each here.
"""

from pipeline.queues.base import Ack, Progress, Queue
from pipeline.queues.list import ListQueue
from pipeline.queues.list_reliable import ReliableListQueue
from pipeline.queues.stream import StreamQueue
from pipeline.registry import Registry

QUEUES: Registry[type[Queue]] = Registry(
    "queue",
    {
        "list": ListQueue,  # seed: LPUSH / BRPOP, one JSON entry at a time; popped = gone (lossy on a crash)
        "list_reliable": ReliableListQueue,  # BLMOVE to a processing list, LREM after the commit; recovers on start
        "stream": StreamQueue,  # Redis Streams + consumer group, XACK (and XDEL) after the commit
    },
)

__all__ = ["QUEUES", "Ack", "Progress", "Queue"]
