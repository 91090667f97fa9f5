"""Name -> implementation catalogs (annotation readers, backends, model registries, deploy targets).

One small helper in the spirit of detectron2's ``DatasetCatalog``: :meth:`Catalog.register` refuses a
name that is already taken (a second reader called ``voc`` would otherwise silently replace the
first), and a lookup of an unknown name raises :class:`training.errors.NotFoundError` listing what
exists, with a near match first. A catalog is a read-only mapping: ``name in c``, ``list(c)``,
``c[name]``.

Entries are any object. A string ``"module:attribute"`` is an entry imported lazily by
:meth:`Catalog.load` (so cloud SDKs load only when their backend or target is asked for).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from training.errors import ConfigError, unknown_name_error

T = TypeVar("T")


class Catalog(Mapping[str, T], Generic[T]):
    """Named implementations of one ``kind`` (e.g. ``"backend"``), in registration order."""

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` and return it.

        Raises:
          ConfigError: ``name`` is empty or already registered (nothing is replaced).
        """
        if not name:
            raise ConfigError(f"a {self.kind} needs a name")
        if name in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is already registered; choose another name")
        self._entries[name] = entry
        return entry

    def lookup(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
          NotFoundError: unknown ``name``; the message suggests a near match and lists the known names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name_error(self.kind, name, list(self._entries)) from None

    def load(self, name: str, **kwargs: Any) -> Any:
        """Import the ``"module:Class"`` entry ``name`` and instantiate it with ``kwargs``.

        Raises:
          NotFoundError: unknown ``name`` (see :meth:`lookup`).
        """
        module_name, _, attr = str(self.lookup(name)).partition(":")
        return getattr(importlib.import_module(module_name), attr)(**kwargs)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Catalog({self.kind!r}, {self._entries!r})"


__all__ = ["Catalog"]
