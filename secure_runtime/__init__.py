"""The hardened inference server for sealed models.

Public API::

    from secure_runtime import Trust, load_sealed

    weights = load_sealed(sealed_dir, trust=Trust(public_keys=(Path("signer.pub"),)))

:func:`load_sealed` returns the verified, decrypted tensors (weights only);
:func:`load_sealed_model` and :func:`build_module` are what the server uses; ``Trust``
names the signers whose model signatures are accepted. The server itself is
``python -m secure_runtime`` (start-up in :mod:`secure_runtime.startup`, the data plane
in :mod:`secure_runtime.dataplane`, REST and gRPC adapters in :mod:`secure_runtime.rest`
and :mod:`secure_runtime.grpc_service`). Names resolve lazily so that
``python -m secure_runtime --help`` does not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.signing.model import Trust
    from secure_runtime.loader import LoadedModel, build_module, load_sealed, load_sealed_model

__all__ = ["LoadedModel", "Trust", "build_module", "load_sealed", "load_sealed_model"]


def __getattr__(name: str) -> Any:
    if name == "Trust":
        from pipeline.signing.model import Trust

        return Trust
    if name in __all__:
        from secure_runtime import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'secure_runtime' has no attribute {name!r}")
