"""``seal.json``: the manifest of a sealed model, and its strict parser.

The manifest is what the model signature covers first: it commits to the wrapped
data key, the key provider and key id, the AEAD parameters, and every file of the
model with its plaintext and ciphertext digests and sizes. The reader trusts
nothing in it until the signature over it has been checked, and even then parses
it strictly (unknown format versions, odd paths, impossible sizes are refused),
because it also comes from disk or a registry.

The format is documented in docs/sealed-weights.md; bump ``FORMAT_VERSION`` on any
incompatible change.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pipeline._json import loads_strict
from pipeline.errors import InputError
from pipeline.signing.model import SIGNATURE_NAME

MANIFEST_NAME = "seal.json"
FORMAT = "secure-model-pipeline/sealed-model"
FORMAT_VERSION = 1
AEAD_SCHEME = "tink-streaming-aead/AES256_GCM_HKDF"
SEALED_SUFFIX = ".sealed"
#: Extensions that are always weights: sealed whatever pipeline.yaml says, never pushed plain.
WEIGHT_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".npz", ".h5", ".msgpack"}
)
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
ALLOWED_SEGMENT_SIZES = (4096, 1 << 20)
#: seal.json nests four levels (manifest, files, entry, sealed); allow some slack.
MAX_MANIFEST_DEPTH = 8


@dataclass(frozen=True)
class KeyInfo:
    """Which provider and key wrapped the data key, and the wrapped bytes."""

    provider: str
    key_id: str
    wrap_algorithm: str
    wrapped_key: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "key_id": self.key_id,
            "wrap_algorithm": self.wrap_algorithm,
            "wrapped_key": base64.b64encode(self.wrapped_key).decode("ascii"),
        }


@dataclass(frozen=True)
class FileEntry:
    """One file of the model: sealed (weights) or stored as is (config, code)."""

    path: str
    size: int
    sha256: str
    sealed_path: str | None = None
    sealed_size: int | None = None
    sealed_sha256: str | None = None

    @property
    def is_sealed(self) -> bool:
        return self.sealed_path is not None

    @property
    def stored_path(self) -> str:
        """The name of the file as it sits in the sealed directory."""
        return self.sealed_path or self.path

    @property
    def stored_sha256(self) -> str:
        return self.sealed_sha256 or self.sha256

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.is_sealed:
            data["sealed"] = {
                "path": self.sealed_path,
                "size": self.sealed_size,
                "sha256": self.sealed_sha256,
            }
        return data


@dataclass(frozen=True)
class SealManifest:
    """Parsed ``seal.json``."""

    name: str
    segment_size: int
    key: KeyInfo
    files: tuple[FileEntry, ...]
    signature: str = SIGNATURE_NAME
    created_by: str = field(default="", compare=False)

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise InputError(f"{MANIFEST_NAME}: no file '{path}' in the sealed model")

    @property
    def sealed_files(self) -> tuple[FileEntry, ...]:
        return tuple(f for f in self.files if f.is_sealed)

    @property
    def plain_files(self) -> tuple[FileEntry, ...]:
        return tuple(f for f in self.files if not f.is_sealed)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "aead": {"scheme": AEAD_SCHEME, "segment_size": self.segment_size, "hkdf": "SHA256"},
            "key": self.key.to_json(),
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path)],
            "signature": {"path": self.signature, "format": "model-signing/sigstore-bundle-v0.3"},
            "created_by": self.created_by,
        }

    def to_bytes(self) -> bytes:
        """Canonical bytes: sorted keys, fixed separators, so equal content hashes equal."""
        return (json.dumps(self.to_json(), sort_keys=True, indent=2) + "\n").encode("utf-8")


def associated_data(path: str) -> bytes:
    """AEAD associated data for a file: binds the ciphertext to its place in the model.

    A ciphertext moved to another name (or swapped with a sibling) fails to decrypt.
    """
    return b"secure-model-pipeline/sealed-file/v1\x00" + path.encode("utf-8")


def check_relative_path(path: Any, what: str = "path") -> str:
    """A safe relative POSIX path: no absolute paths, no '..', no empty parts, no NUL."""
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        raise InputError(f"{MANIFEST_NAME}: invalid {what} {path!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")):
        raise InputError(f"{MANIFEST_NAME}: unsafe {what} {path!r}")
    return path


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise InputError(f"{MANIFEST_NAME}: missing '{key}' in {where}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InputError(f"{MANIFEST_NAME}: '{key}' in {where} has the wrong type")
    return value


def _digest(obj: dict[str, Any], key: str, where: str) -> str:
    value: str = _require(obj, key, str, where)
    if not _HEX64.match(value):
        raise InputError(f"{MANIFEST_NAME}: '{key}' in {where} is not a sha256 hex digest")
    return value


def _size(obj: dict[str, Any], key: str, where: str) -> int:
    value: int = _require(obj, key, int, where)
    if value < 0:
        raise InputError(f"{MANIFEST_NAME}: '{key}' in {where} is negative")
    return value


def _parse_file(raw: Any, index: int) -> FileEntry:
    where = f"files[{index}]"
    if not isinstance(raw, dict):
        raise InputError(f"{MANIFEST_NAME}: {where} is not an object")
    path = check_relative_path(_require(raw, "path", str, where))
    entry = FileEntry(
        path=path, size=_size(raw, "size", where), sha256=_digest(raw, "sha256", where)
    )
    sealed = raw.get("sealed")
    if sealed is None:
        return entry
    if not isinstance(sealed, dict):
        raise InputError(f"{MANIFEST_NAME}: {where}.sealed is not an object")
    swhere = f"{where}.sealed"
    return FileEntry(
        path=path,
        size=entry.size,
        sha256=entry.sha256,
        sealed_path=check_relative_path(_require(sealed, "path", str, swhere)),
        sealed_size=_size(sealed, "size", swhere),
        sealed_sha256=_digest(sealed, "sha256", swhere),
    )


def parse_manifest(data: bytes) -> SealManifest:
    """Parse and validate ``seal.json`` bytes; :class:`InputError` on anything odd."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise InputError(f"{MANIFEST_NAME}: larger than {MAX_MANIFEST_BYTES} bytes")
    # Strict: duplicate keys, integers of more than 64 bits, NaN and deep nesting are
    # refused here, before the signature is checked and whether or not there is one.
    raw = loads_strict(data, MANIFEST_NAME, max_depth=MAX_MANIFEST_DEPTH)
    if not isinstance(raw, dict):
        raise InputError(f"{MANIFEST_NAME}: expected a JSON object")
    if raw.get("format") != FORMAT:
        raise InputError(
            f"{MANIFEST_NAME}: not a sealed-model manifest (format {raw.get('format')!r})"
        )
    if raw.get("version") != FORMAT_VERSION:
        raise InputError(
            f"{MANIFEST_NAME}: unsupported format version {raw.get('version')!r} "
            f"(this reader knows {FORMAT_VERSION})"
        )
    aead = _require(raw, "aead", dict, "manifest")
    if aead.get("scheme") != AEAD_SCHEME or aead.get("hkdf") != "SHA256":
        raise InputError(f"{MANIFEST_NAME}: unsupported AEAD scheme {aead.get('scheme')!r}")
    segment_size = _require(aead, "segment_size", int, "aead")
    if segment_size not in ALLOWED_SEGMENT_SIZES:
        raise InputError(f"{MANIFEST_NAME}: unsupported segment size {segment_size}")
    key = _require(raw, "key", dict, "manifest")
    try:
        wrapped = base64.b64decode(_require(key, "wrapped_key", str, "key"), validate=True)
    except binascii.Error:
        raise InputError(f"{MANIFEST_NAME}: key.wrapped_key is not base64") from None
    key_info = KeyInfo(
        provider=_require(key, "provider", str, "key"),
        key_id=_require(key, "key_id", str, "key"),
        wrap_algorithm=_require(key, "wrap_algorithm", str, "key"),
        wrapped_key=wrapped,
    )
    raw_files = _require(raw, "files", list, "manifest")
    files = tuple(_parse_file(item, i) for i, item in enumerate(raw_files))
    stored = [f.stored_path for f in files] + [f.path for f in files]
    if len({f.path for f in files}) != len(files) or len(set(f.stored_path for f in files)) != len(
        files
    ):
        raise InputError(f"{MANIFEST_NAME}: duplicate file names")
    signature = raw.get("signature", {}).get("path", SIGNATURE_NAME) if isinstance(
        raw.get("signature"), dict
    ) else SIGNATURE_NAME
    check_relative_path(signature, "signature path")
    if MANIFEST_NAME in stored or signature in stored:
        raise InputError(f"{MANIFEST_NAME}: a file entry uses a reserved name")
    name = _require(raw, "name", str, "manifest")
    return SealManifest(
        name=name,
        segment_size=segment_size,
        key=key_info,
        files=files,
        signature=signature,
        created_by=str(raw.get("created_by", "")),
    )
