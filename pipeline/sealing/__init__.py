"""Sealing: model weights encrypted at rest, opened only in memory, keys held by providers.

A sealed model is a directory: every weight file as a Tink-compatible streaming-AEAD
ciphertext (``*.sealed``), the other files as they are, and ``seal.json`` recording
every file's digests, the AEAD parameters and the data key wrapped by a key provider
(local keyring, PKCS#11 token; cloud KMS behind the same interface). Opening verifies
the model signature first, then unwraps, then decrypts segments in parallel into a
caller's buffer. Formats: docs/sealed-weights.md, docs/key-providers.md, docs/oci.md.

Usage::

    from pipeline.sealing import open_sealed, seal_model
    from pipeline.signing import Trust

    seal_model("model/", "sealed/", key="prod", sign_key="release.key")
    opened = open_sealed("sealed/", trust=Trust(public_keys=(Path("release.pub"),)))

Names resolve lazily: the runtime's loader imports what it opens a model with, not
the sealer or the registry client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._facade import lazy_exports

if TYPE_CHECKING:
    from pipeline.sealing.artifact import pull_sealed_model, push_sealed_model
    from pipeline.sealing.keys import PROVIDER_NAMES, KeyProvider, get_provider, resolve_key_id
    from pipeline.sealing.manifest import MANIFEST_NAME, FileEntry, KeyInfo, SealManifest
    from pipeline.sealing.open import OpenedModel, decrypt_file_into, open_sealed
    from pipeline.sealing.safetensors_buffer import SafetensorsHeader, tensors_from_buffer
    from pipeline.sealing.seal import SealResult, seal_model
    from pipeline.sealing.unseal import unseal_to, verify_sealed

_LAZY = {
    "pull_sealed_model": "pipeline.sealing.artifact",
    "push_sealed_model": "pipeline.sealing.artifact",
    "PROVIDER_NAMES": "pipeline.sealing.keys",
    "KeyProvider": "pipeline.sealing.keys",
    "get_provider": "pipeline.sealing.keys",
    "resolve_key_id": "pipeline.sealing.keys",
    "MANIFEST_NAME": "pipeline.sealing.manifest",
    "FileEntry": "pipeline.sealing.manifest",
    "KeyInfo": "pipeline.sealing.manifest",
    "SealManifest": "pipeline.sealing.manifest",
    "OpenedModel": "pipeline.sealing.open",
    "decrypt_file_into": "pipeline.sealing.open",
    "open_sealed": "pipeline.sealing.open",
    "SafetensorsHeader": "pipeline.sealing.safetensors_buffer",
    "tensors_from_buffer": "pipeline.sealing.safetensors_buffer",
    "SealResult": "pipeline.sealing.seal",
    "seal_model": "pipeline.sealing.seal",
    "unseal_to": "pipeline.sealing.unseal",
    "verify_sealed": "pipeline.sealing.unseal",
}

__all__ = [
    "MANIFEST_NAME",
    "PROVIDER_NAMES",
    "FileEntry",
    "KeyInfo",
    "KeyProvider",
    "OpenedModel",
    "SafetensorsHeader",
    "SealManifest",
    "SealResult",
    "decrypt_file_into",
    "get_provider",
    "open_sealed",
    "pull_sealed_model",
    "push_sealed_model",
    "resolve_key_id",
    "seal_model",
    "tensors_from_buffer",
    "unseal_to",
    "verify_sealed",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
