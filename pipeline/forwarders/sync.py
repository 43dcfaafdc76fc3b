from __future__ import annotations

import time

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from pipeline import metrics
from pipeline.forwarders.base import RETRY_FOR_S, Forwarder
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
                for attempt in Retrying(
                    stop=stop_after_delay(RETRY_FOR_S),
                    wait=wait_random_exponential(multiplier=0.05, max=1.0),
                    retry=retry_if_exception_type((requests.RequestException, _Retryable)),
                    reraise=True,
                ):
                    with attempt:
                        t = time.perf_counter()
                        resp = requests.post(url, data=body, headers=self.headers, timeout=10)  # blocking, on purpose
                        hist.observe(time.perf_counter() - t)
                        if resp.status_code >= 500:
                            raise _Retryable(f"{resp.status_code} {resp.text[:200]}")
                        if resp.status_code >= 300:
                            self.give_up(url, n, f"{resp.status_code} {resp.text[:200]}")
                            break
                        self.forwarded.inc(n)
            except (requests.RequestException, _Retryable) as exc:
                self.give_up(url, n, exc)


class _Retryable(Exception):
    pass
