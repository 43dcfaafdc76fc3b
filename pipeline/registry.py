"""Name → variant registries. The matrix is just names: every name is checked here, with the valid ones listed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownVariantError(ValueError):
    def __init__(self, kind: str, name: object, valid: list[str]) -> None:
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")


class Registry(Mapping[str, T], Generic[T]):
    """An immutable mapping of variant name → variant class for one kind (decoder, queue, sink, forwarder)."""

    def __init__(self, kind: str, items: Mapping[str, T]) -> None:
        self.kind = kind
        self._items = dict(items)

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownVariantError(self.kind, name, self.names()) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def check(self, name: str) -> str:
        """Return name if registered, else raise UnknownVariantError listing the valid names."""
        self[name]
        return name


_KINDS = {
    "decoder": ("pipeline.decoders", "DECODERS"),
    "queue": ("pipeline.queues", "QUEUES"),
    "sink": ("pipeline.sinks", "SINKS"),
    "forwarder": ("pipeline.forwarders", "FORWARDERS"),
}


def check_variant(kind: str, name: str) -> str:
    """``name`` if it is a registered variant of ``kind`` (decoder, queue, sink, forwarder), else
    UnknownVariantError listing the valid ones. Imports the registry lazily (settings import this module early)."""
    import importlib

    module, attr = _KINDS[kind]
    registry: Registry[object] = getattr(importlib.import_module(module), attr)
    return registry.check(name)
