"""Lazy package exports: a package's names imported from their modules on first use, so that importing the
package (as DAG files do) stays cheap."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A package's module-level ``__getattr__`` and ``__all__`` for ``exports`` (name -> the module defining it):
    ``__getattr__, __all__ = lazy_exports(__name__, {...})``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module), name)

    return __getattr__, sorted(exports)
