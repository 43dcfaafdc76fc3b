"""Name → variant registries. The matrix is just names: every name is checked here, with the valid ones listed.

A registry is either a fixed mapping (decoders, forwarders: one line per variant in their ``__init__``) or
discovered (queues, sinks): every module of its package is imported and every concrete subclass of the kind's base
class that sets ``name`` is registered, so a new variant is one new file. Variants outside the package come from
plugin modules: ``TELEMETRY_PLUGINS`` (comma-separated module names, importable on ``PYTHONPATH``) is imported by
every registry before its first answer — in every process, since each stage is its own process and the harness
hands ``TELEMETRY_PLUGINS`` on to its children. A plugin module defines subclasses (discovered kinds) or calls
``REGISTRY.register(cls)`` (any kind).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")

PLUGINS_ENV = "TELEMETRY_PLUGINS"


class UnknownVariantError(ValueError):
    def __init__(self, kind: str, name: object, valid: list[str]) -> None:
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")


class PluginError(ValueError):
    """A plugin module named in TELEMETRY_PLUGINS could not be imported."""


_imported_plugins: set[str] = set()


def plugin_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def load_plugins() -> int:
    """Import the TELEMETRY_PLUGINS modules not imported yet; returns how many plugin modules are imported."""
    for module in plugin_modules():
        if module in _imported_plugins:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise PluginError(f"{PLUGINS_ENV}: cannot import {module!r}: {type(exc).__name__}: {exc}") from exc
        _imported_plugins.add(module)
    return len(_imported_plugins)


class Registry(Mapping[str, T], Generic[T]):
    """Variant name → variant class for one kind (decoder, queue, sink, forwarder).

    ``Registry(kind, {name: cls})``: fixed; ``Registry(kind, package=..., base=...)``: discovered (see module),
    ``order`` naming the variants listed first (in error messages, ``"*"`` in a matrix); the others follow."""

    def __init__(
        self,
        kind: str,
        items: Mapping[str, T] | None = None,
        *,
        package: str | None = None,
        base: Any = None,
        order: tuple[str, ...] = (),
    ) -> None:
        if (package is None) != (base is None):
            raise TypeError("a discovered registry needs both package and base")
        self.kind, self.package, self.base, self.order = kind, package, base, order
        self._items: dict[str, T] = dict(items or {})
        self._scanned = -1 if package is not None else 0  # plugin modules imported when last scanned
        self._unregistered: set[str] = set()  # discovery leaves these out

    def register(self, cls: T) -> T:
        """Register ``cls`` under its ``name`` attribute (usable as a class decorator); a name taken by another
        class is an error."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls!r} has no 'name': a {self.kind} variant sets name = '...'")
        if self._items.get(name, cls) is not cls:
            raise ValueError(f"two {self.kind} variants are called {name!r}: {self._items[name]!r} and {cls!r}")
        self._items[name] = cls
        self._unregistered.discard(name)
        return cls

    def unregister(self, name: str) -> None:
        """Forget variant ``name`` (a test's throwaway variant)."""
        self._items.pop(name, None)
        self._unregistered.add(name)

    def _load(self) -> None:
        plugins = load_plugins()
        if self.package is None or plugins == self._scanned:
            return
        pkg = importlib.import_module(self.package)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            importlib.import_module(f"{self.package}.{info.name}")
        found = [c for c in _subclasses(self.base) if "name" in vars(c) and not inspect.isabstract(c)]
        rank = {name: i for i, name in enumerate(self.order)}  # listed first, in this order; the rest by module
        for cls in sorted(found, key=lambda c: (rank.get(c.name, len(rank)), c.__module__, c.name)):
            if cls.name not in self._unregistered:
                self.register(cls)
        self._scanned = plugins

    def __getitem__(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownVariantError(self.kind, name, self.names()) from None

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._items))

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def names(self) -> list[str]:
        self._load()
        return list(self._items)

    def check(self, name: str) -> str:
        """Return name if registered, else raise UnknownVariantError listing the valid names."""
        self[name]
        return name


def _subclasses(base: Any) -> list[Any]:
    """Every subclass of ``base``, at any depth."""
    out: list[Any] = []
    for sub in base.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


_KINDS = {
    "decoder": ("pipeline.decoders", "DECODERS"),
    "queue": ("pipeline.queues", "QUEUES"),
    "sink": ("pipeline.sinks", "SINKS"),
    "forwarder": ("pipeline.forwarders", "FORWARDERS"),
}


def registry(kind: str) -> Registry[Any]:
    """The registry of variant ``kind`` (decoder, queue, sink, forwarder). Imported lazily (settings import this
    module early)."""
    module, attr = _KINDS[kind]
    reg: Registry[Any] = getattr(importlib.import_module(module), attr)
    return reg


def check_variant(kind: str, name: str) -> str:
    """``name`` if it is a registered variant of ``kind``, else UnknownVariantError listing the valid ones."""
    return registry(kind).check(name)
