"""Lazy public facades: a package names its public API once and imports each name on first use.

Why lazy: ``pipeline.signing``, ``pipeline.sealing`` and ``pipeline.oci`` are imported by
the secure runtime, whose cold start is measured; importing a package must not pull in
every module under it (the registry client's ``requests``, the keyless machinery, the
sealer) when one name is wanted. Static type checkers see the names through the
facade's ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each name to its module."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *exports})

    return __getattr__, __dir__
