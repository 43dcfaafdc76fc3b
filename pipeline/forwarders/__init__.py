"""Forwarder variants: send rows to the backend. One file per variant, one line each here."""

from pipeline.forwarders.async_ import AsyncForwarder
from pipeline.forwarders.base import Forwarder
from pipeline.forwarders.none import NoForwarder
from pipeline.forwarders.pubsub import PubSubForwarder
from pipeline.forwarders.sync import SyncForwarder
from pipeline.registry import Registry

FORWARDERS: Registry[type[Forwarder]] = Registry(
    "forwarder",
    {
        "sync": SyncForwarder,  # seed: a blocking requests.post per reading (stalls the event loop)
        "async": AsyncForwarder,  # httpx.AsyncClient, bounded in-flight POSTs, per reading or batched
        "pubsub": PubSubForwarder,  # Redis PUBLISH of each batch, the backend subscribed: no HTTP hop, at most once
        "none": NoForwarder,  # nothing leaves for the backend
    },
)

__all__ = ["FORWARDERS", "Forwarder"]
