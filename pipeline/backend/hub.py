"""Websocket fan-out: the connected clients and how a reading reaches them.

Two ways, one per backend behaviour:

- ``fast`` (``Hub.publish``): never awaits. Every client has its own bounded queue (``--ws-buffer`` messages) and
  its own sender task (``Client.pump``), so a slow or dead client only loses its own messages (counted in
  ``backend_broadcast_dropped_readings``).
- ``seed`` (``Hub.send_awaited``): the seed's broadcast, awaited client by client by the POST handler before it
  answers; a slow client stalls every POST.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import WebSocket
from prometheus_client import Counter

from pipeline import metrics


class Client:
    """One websocket subscriber: a bounded queue of (text, readings) messages, drained by its own task."""

    __slots__ = ("batch", "client_id", "queue", "ws")

    def __init__(self, ws: WebSocket, client_id: str, batch: bool, buffer: int) -> None:
        self.ws, self.client_id, self.batch = ws, client_id, batch
        self.queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue(buffer)

    def offer(self, text: str, n: int) -> int:
        """Queue one message holding n readings; returns the readings dropped (0 or n)."""
        try:
            self.queue.put_nowait((text, n))
        except asyncio.QueueFull:
            return n
        return 0

    def offer_each(self, texts: list[str]) -> int:
        """Queue one message per reading, as many as fit; returns the readings dropped."""
        q = self.queue
        room = q.maxsize - q.qsize()
        for text in texts[:room] if room < len(texts) else texts:
            q.put_nowait((text, 1))
        return max(0, len(texts) - room)

    async def pump(self, dropped: Counter) -> None:
        """Send queued messages until the socket fails or the task is cancelled; counts what was sent.

        A message taken from the queue but not sent (the client left, or stalled until shutdown) counts as
        dropped, so for every client: readings offered = sent + dropped.
        """
        q, send = self.queue, self.ws.send_text
        while True:
            text, n = await q.get()
            sent = 0
            try:
                await send(text)
                sent = n
                for _ in range(1023):  # whatever queued meanwhile, before touching the counter again
                    if q.empty():
                        break
                    text, n = q.get_nowait()
                    await send(text)
                    sent += n
            except BaseException:
                dropped.inc(n)
                raise
            finally:
                if sent:
                    metrics.count("broadcast", sent)


class Hub:
    """The set of websocket clients, and the two ways of sending them a reading."""

    def __init__(self, buffer: int, max_clients: int, *, awaited: bool = False) -> None:
        self.buffer, self.max_clients = buffer, max_clients
        self.awaited = awaited  # seed behaviour: the POST sends; no per-client sender task
        self.clients: set[Client] = set()
        self._gauge = metrics.ws_clients()
        self.dropped = metrics.broadcast_dropped()

    def add(self, client: Client) -> None:
        self.clients.add(client)
        self._gauge.set(len(self.clients))

    def remove(self, client: Client) -> None:
        self.clients.discard(client)
        self._gauge.set(len(self.clients))
        left = 0  # queued for a client that is gone: never delivered
        while not client.queue.empty():
            left += client.queue.get_nowait()[1]
        if left:
            self.dropped.inc(left)

    def publish(self, readings: list[dict[str, Any]]) -> None:
        """Encode once per message shape, then put_nowait into every client's queue (drop when full)."""
        if not self.clients or not readings:
            return
        each: list[str] | None = None
        whole: str | None = None
        dropped = 0
        for client in self.clients:  # no await in this loop: the set cannot change under it
            if client.batch:
                if whole is None:
                    whole = "[" + ",".join(each) + "]" if each else orjson.dumps(readings).decode()
                dropped += client.offer(whole, len(readings))
            else:
                if each is None:
                    each = [orjson.dumps(r).decode() for r in readings]
                dropped += client.offer_each(each)
        if dropped:
            self.dropped.inc(dropped)

    async def send_awaited(self, text: str) -> None:
        """The seed's broadcast of one reading's JSON: ``await send_text`` to each client in turn.

        The seed iterates its live list and mutates it when a send fails (a bug); this iterates a snapshot, and a
        client whose send fails is left to its own handler (which sees the disconnect and removes it).
        """
        print(f"broadcasting to {len(self.clients)} websocket clients")  # the seed's print before the loop
        sent = 0
        for client in list(self.clients):
            try:
                await client.ws.send_text(f"[{text}]" if client.batch else text)
            except Exception:  # the client is gone or going: its reading is lost, as in the seed
                self.dropped.inc(1)
            else:
                sent += 1
        if sent:
            metrics.count("broadcast", sent)
