from __future__ import annotations

import time

import requests
from tenacity import Retrying

from pipeline import metrics
from pipeline.forwarders.base import Forwarder, Retryable, retry_policy
from pipeline.rows import Row


class SyncForwarder(Forwarder):
    """The seed's forwarder: ``requests.post`` per reading, a new connection each time, called from a coroutine.

    It blocks the event loop for the whole request. That is the point: in the ``node`` topology it stalls the
    stream reader, the queue reader and the COPY alike, as in the seed.
    """

    name = "sync"
    blocks_event_loop = True

    async def send(self, rows: list[Row]) -> None:
        hist = metrics.forward_request_seconds()
        for url, body, n in self.requests_for(rows):
            try:
                for attempt in Retrying(**retry_policy(requests.RequestException)):
                    with attempt:
                        t = time.perf_counter()
                        resp = requests.post(url, data=body, headers=self.headers, timeout=10)  # blocking, on purpose
                        hist.observe(time.perf_counter() - t)
                        self.settle(url, n, resp.status_code, resp.text)
            except (requests.RequestException, Retryable) as exc:
                self.give_up(url, n, exc)
