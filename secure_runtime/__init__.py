"""The hardened inference server for sealed models.

Public API: :func:`load_sealed` (weights only), :func:`load_sealed_model` and
:func:`build_module` (what the server uses). Names resolve lazily so that
``python -m secure_runtime --help`` does not pay for importing torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LoadedModel", "build_module", "load_sealed", "load_sealed_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from secure_runtime import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'secure_runtime' has no attribute {name!r}")
