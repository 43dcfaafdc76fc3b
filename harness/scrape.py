"""Read a stage's /metrics: counters for the accounting, histogram buckets for the reports."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Scrape:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def readings(self, stage: str) -> int:
        return int(self.get("telemetry_readings_total", stage=stage))

    def histogram(self, name: str) -> dict[str, float]:
        """{le: cumulative count} of one unlabelled histogram ('+Inf' included); empty if absent."""
        out = {}
        for (n, labels), v in self.samples.items():
            if n == f"{name}_bucket":
                out[dict(labels)["le"]] = v
        return out


def parse(text: str) -> Scrape:
    s = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            s.samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return s


async def scrape(client: httpx.AsyncClient, url: str) -> Scrape:
    resp = await client.get(url, timeout=5.0)
    resp.raise_for_status()
    return parse(resp.text)
