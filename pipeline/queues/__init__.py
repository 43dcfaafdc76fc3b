"""Queue variants between ingest and the writer (and ingest/writer and the forwarder in ``split``).

Every variant has the same shape (``pipeline.queues.base.Queue``): ``put(rows)``, ``get(max, timeout) ->
(rows, ack)``, ``ack(token)``, owns its payload encoding, and tells an observer (the harness) its depth and the
summary of the Redis keys it keeps (``Queue.depth``, ``Queue.summary``). One file per variant: a module here with a
``Queue`` subclass that sets ``name`` is registered by discovery (``pipeline.registry``). Built in: ``list`` (the
seed's LPUSH/BRPOP; popped = gone), ``list_reliable`` (BLMOVE to a processing list, LREM after the commit),
``stream`` (Redis Streams + consumer group, XACK and XDEL after the commit).
"""

from pipeline.queues.base import Ack, Progress, Queue
from pipeline.registry import Registry

QUEUES: Registry[type[Queue]] = Registry("queue", package=__name__, base=Queue)

__all__ = ["QUEUES", "Ack", "Progress", "Queue"]
