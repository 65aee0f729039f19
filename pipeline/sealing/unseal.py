"""Operator-side checks of a sealed model: verify everything, or deliberately decrypt to disk.

``verify_sealed`` is what ``pipeline unseal --verify-only`` runs: the full signature
check (every file hashed), the data key unwrapped, every weight file decrypted in
memory, its plaintext digest compared with ``seal.json`` and its safetensors header
parsed. It writes nothing.

``unseal_to`` is the one place plaintext weights reach a disk, and only because an
operator asked for it with an explicit output directory; files are written into a
0700 temporary directory next to the target and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline._fileio import atomic_directory
from pipeline.config import Settings, load_settings
from pipeline.errors import InputError, IntegrityError
from pipeline.sealing.open import decrypt_file_into, open_sealed, unwrap_data_key, zero
from pipeline.sealing.safetensors_buffer import parse_header
from pipeline.signing.model import SIGNATURE_NAME

if TYPE_CHECKING:
    from pipeline.signing.model import Trust


def verify_sealed(
    path: str | os.PathLike[str],
    *,
    trust: Trust | None = None,
    allow_unsigned: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Check every byte of a sealed model; returns a report, raises on the first problem."""
    settings = settings or load_settings()
    opened = open_sealed(
        path, trust=trust, allow_unsigned=allow_unsigned, full_verify=True, settings=settings
    )
    data_key = unwrap_data_key(opened, settings)
    checked: list[dict[str, Any]] = []
    try:
        for entry in opened.manifest.sealed_files:
            buffer = bytearray(entry.size)
            try:
                decrypt_file_into(opened, entry, data_key, memoryview(buffer))
                if hashlib.sha256(buffer).hexdigest() != entry.sha256:
                    raise IntegrityError(f"{entry.path}: plaintext digest differs from seal.json")
                tensors = None
                if entry.path.endswith(".safetensors"):
                    tensors = len(parse_header(buffer).tensors)
            finally:
                zero(buffer)
            checked.append({"path": entry.path, "bytes": entry.size, "tensors": tensors})
    finally:
        zero(data_key)
    return {
        "verified": True,
        "path": str(opened.path),
        "name": opened.manifest.name,
        "signature_verified": opened.signature_verified,
        "signature_present": (opened.path / SIGNATURE_NAME).exists(),
        "key_id": opened.manifest.key.key_id,
        "sealed_files": checked,
        "plain_files": sorted(opened.files),
        "manifest_sha256": opened.manifest_sha256,
    }


def unseal_to(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    trust: Trust | None = None,
    allow_unsigned: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Decrypt a sealed model into ``out_dir`` (which must not exist): explicit operator action."""
    settings = settings or load_settings()
    target = Path(out_dir)
    if target.exists():
        raise InputError(f"{target} already exists; choose a new directory")
    opened = open_sealed(
        path, trust=trust, allow_unsigned=allow_unsigned, full_verify=True, settings=settings
    )
    data_key = unwrap_data_key(opened, settings)
    try:
        with atomic_directory(target) as tmp:
            for name, content in opened.files.items():
                dest = tmp / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(content)
            for entry in opened.manifest.sealed_files:
                buffer = bytearray(entry.size)
                try:
                    decrypt_file_into(opened, entry, data_key, memoryview(buffer))
                    if hashlib.sha256(buffer).hexdigest() != entry.sha256:
                        raise IntegrityError(
                            f"{entry.path}: plaintext digest differs from seal.json"
                        )
                    dest = tmp / entry.path
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(buffer)
                finally:
                    zero(buffer)
    finally:
        zero(data_key)
    return {"unsealed": str(target), "files": sorted(f.path for f in opened.manifest.files)}
