"""Transitional dict-style reads of the typed result models (``Accounting``, ``Fault``, ``PipelineConfig``).

``results.json`` used to hold these as plain dicts, and the report, the runner and compare still read them as
``a.get("generated", 0)``. Until they read attributes (``a.generated``), this keeps ``get`` and ``[key]`` working on
the models, for reading only. Remove it once nothing calls them.
"""

from __future__ import annotations

from typing import Any


class DictReads:
    """``model.get(key, default)`` and ``model[key]``: a field or a computed field, read as from its dump."""

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default) if isinstance(key, str) else default

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None
