from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from pipeline.rows import Row


class DecodeError(ValueError):
    """A message that cannot become a row; ingest counts it and skips it."""


class Decoder(ABC):
    """Turns one ``TelemetryResponse`` into one row. ``ingested_ns`` is stamped once per stream message."""

    name: str

    @abstractmethod
    def decode(self, msg: Any, ingested_ns: int) -> Row: ...

    def decode_many(self, msgs: Iterable[Any], ingested_ns: int, errors: list[str] | None = None) -> list[Row]:
        """Decode many; a bad message is skipped and its reason appended to ``errors`` (if given)."""
        decode = self.decode
        out: list[Row] = []
        for msg in msgs:
            try:
                out.append(decode(msg, ingested_ns))
            except DecodeError as exc:
                if errors is not None:
                    errors.append(str(exc))
        return out
