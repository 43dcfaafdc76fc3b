"""Transitional dict-style reads of the typed result models (``Accounting``, ``Fault``, ``PipelineConfig``).

``results.json`` used to hold these as plain dicts, and the report, the runner, compare and targets still read
them as ``a.get("generated", 0)``, ``p["forwarder"]`` or ``set(params)``. Until they read attributes
(``a.generated``), this makes each model read like the dict it replaced — its ``model_dump()``: fields and computed
fields (``lost``, ``recovery_s`` ...), excluded ones left out. Read only. Remove it once nothing calls it.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView
from typing import Any

from pydantic import BaseModel


class DictReads(BaseModel):
    """A pydantic model with ``get``, ``[key]``, ``in``, ``keys()``, ``items()`` and iteration over the keys, as
    on its ``model_dump()``."""

    def _as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def get(self, key: str, default: Any = None) -> Any:
        return self._as_dict().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._as_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._as_dict()

    def keys(self) -> KeysView[str]:
        return self._as_dict().keys()

    def items(self) -> ItemsView[str, Any]:
        return self._as_dict().items()

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self._as_dict())
