from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import orjson
from tenacity import retry_if_exception_type, stop_after_delay, wait_random_exponential

from pipeline import metrics
from pipeline.delay import Delay
from pipeline.rows import Row, row_to_dict

log = logging.getLogger("telemetry_bench.forwarder")

RETRY_FOR_S = 30.0  # a POST is retried (jittered exponential backoff) this long: a backend restart fits


class Retryable(Exception):
    """A 5xx answer: the backend may be restarting, so the POST is tried again."""


def retry_policy(transport_error: type[BaseException]) -> dict[str, Any]:
    """tenacity arguments (``Retrying(**…)`` or ``AsyncRetrying(**…)``) of every forwarder's POST: jittered
    exponential backoff for ``RETRY_FOR_S`` on a transport error of the variant's HTTP client or a 5xx answer,
    then the last error is re-raised (and the variant gives up on those readings). Every attempt that is tried
    again is counted: ``telemetry_errors_total{stage="forwarder",kind="post_retried"}`` (POSTs, not readings)."""
    retried = metrics.errors().labels("forwarder", "post_retried")
    return {
        "stop": stop_after_delay(RETRY_FOR_S),
        "wait": wait_random_exponential(multiplier=0.05, max=1.0),
        "retry": retry_if_exception_type((transport_error, Retryable)),
        "before_sleep": lambda _state: retried.inc(),
        "reraise": True,
    }


class Forwarder(ABC):
    """Sends rows to the backend: ``POST /telem_data`` (one seed reading) or ``POST /telem_data/batch``.

    ``send`` returns once the rows are handed over (sync: delivered; async: admitted under the in-flight bound);
    ``close`` waits for everything in flight. ``forwarded`` counts readings the backend accepted (2xx).
    """

    name: str
    blocks_event_loop: ClassVar[bool] = False  # True: ``send`` blocks the event loop while it POSTs (the verdict
    # then measures the share of the run a one-process topology spends blocked in POSTs)

    # True: the variant reaches the backend through a Redis pub/sub channel, not HTTP (the harness then gives the
    # forwarder and the backend the run's channel, and the backend the run's Redis)
    via_pubsub: ClassVar[bool] = False

    def __init__(
        self,
        backend_url: str,
        *,
        batch: int = 1,
        concurrency: int = 8,
        token: str | None = None,
        redis_url: str | None = None,
        channel: str | None = None,
    ) -> None:
        self.base = backend_url.rstrip("/")
        self.redis_url, self.channel = redis_url, channel
        self.batch, self.concurrency = batch, concurrency
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"
        self.forwarded = metrics.readings().labels("forwarded")
        self.failed = metrics.errors().labels("forwarder", "post_failed")
        self.delay: Delay | None = None  # delay_forwarder_us (set by pipeline.wiring.make_forwarder; None: off)

    async def deliver(self, rows: list[Row]) -> None:
        """What the stages call: the deliberate delay (if any: blocking the event loop where ``send`` does), then
        ``send``."""
        if self.delay is not None:
            if self.blocks_event_loop:
                self.delay.block(len(rows))
            else:
                await self.delay(len(rows))
        await self.send(rows)

    async def start(self) -> None:
        pass

    @abstractmethod
    async def send(self, rows: list[Row]) -> None: ...

    async def close(self) -> None:
        pass

    def requests_for(self, rows: list[Row]) -> list[tuple[str, bytes, int]]:
        """(url, body, readings) per POST: the seed's single-reading body, or arrays of ``batch`` readings."""
        if self.batch == 1:
            url = f"{self.base}/telem_data"
            return [(url, orjson.dumps(row_to_dict(r)), 1) for r in rows]
        url = f"{self.base}/telem_data/batch"
        out = []
        for i in range(0, len(rows), self.batch):
            chunk = rows[i : i + self.batch]
            out.append((url, orjson.dumps([row_to_dict(r) for r in chunk]), len(chunk)))
        return out

    def settle(self, url: str, n: int, status: int, text: str) -> None:
        """Triage one answer to a POST of n readings: 2xx counts them forwarded, 5xx raises ``Retryable``, and
        anything else is given up at once (the body was refused: retrying would not help)."""
        if status >= 500:
            raise Retryable(f"{status} {text[:200]}")
        if status >= 300:
            self.give_up(url, n, f"{status} {text[:200]}", retried=False)
            return
        self.forwarded.inc(n)

    def give_up(self, url: str, n: int, exc: BaseException | Any, *, retried: bool = True) -> None:
        self.failed.inc(n)
        how = f"retried {RETRY_FOR_S:.0f} s" if retried else "refused, not retried"
        log.error("POST %s failed (%s), %d readings not forwarded: %s", url, how, n, exc)
