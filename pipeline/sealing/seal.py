"""Seal a model project: encrypt its weights under a fresh data key, record everything.

Data flow (model-signing style: hash -> manifest -> signature):
    fresh 256-bit data key -> wrapped by the key provider's key-encryption key
    each weight file -> Tink streaming AEAD ciphertext (plaintext + ciphertext sha256)
    each other file  -> copied as is (sha256)
    -> seal.json -> model signature over the whole directory (optional here)
Everything is written into a temporary sibling directory that is renamed into
place at the end, so a failure never leaves a half-sealed model behind.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline import __version__
from pipeline._fileio import atomic_directory
from pipeline.config import Settings, load_settings, read_yaml_mapping
from pipeline.errors import InputError
from pipeline.sealing import _streaming
from pipeline.sealing.keys import KeyProvider
from pipeline.sealing.manifest import (
    ALLOWED_SEGMENT_SIZES,
    MANIFEST_NAME,
    SEALED_SUFFIX,
    WEIGHT_SUFFIXES,
    FileEntry,
    KeyInfo,
    SealManifest,
    associated_data,
)
from pipeline.sealing.safetensors_buffer import check_file
from pipeline.signing.model import SIGNATURE_NAME, sign_model

_SKIP_DIRS = frozenset({"__pycache__", ".git"})


@dataclass(frozen=True)
class SealResult:
    """What ``seal_model`` produced; ``to_json`` is the CLI's ``--json`` output."""

    path: Path
    manifest: SealManifest
    manifest_sha256: str
    signed: bool

    def to_json(self) -> dict[str, object]:
        return {
            "sealed": str(self.path),
            "name": self.manifest.name,
            "key_id": self.manifest.key.key_id,
            "provider": self.manifest.key.provider,
            "files": len(self.manifest.files),
            "sealed_files": [f.path for f in self.manifest.sealed_files],
            "plaintext_bytes": sum(f.size for f in self.manifest.sealed_files),
            "manifest_sha256": self.manifest_sha256,
            "signed": self.signed,
        }


def project_files(model_dir: Path) -> Iterator[str]:
    """Relative POSIX paths of the files to seal: no hidden files, caches or symlinks."""
    for root, dirs, files in os.walk(model_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith(".") or name.endswith(".pyc"):
                continue
            if path.is_symlink():
                raise InputError(f"{path}: symbolic links are not sealed (copy the file instead)")
            yield path.relative_to(model_dir).as_posix()


def weight_files(model_dir: Path, files: list[str]) -> set[str]:
    """Files to encrypt: weight extensions plus whatever pipeline.yaml lists as weights."""
    weights = {f for f in files if Path(f).suffix.lower() in WEIGHT_SUFFIXES}
    project = model_dir / "pipeline.yaml"
    if project.is_file():
        declared = (read_yaml_mapping(project).get("model") or {}).get("weights") or []
        if isinstance(declared, str):
            declared = [declared]
        for name in declared:
            if name not in files:
                raise InputError(
                    f"pipeline.yaml names weights '{name}' that are not in {model_dir}"
                )
            weights.add(name)
    return weights


def model_name(model_dir: Path) -> str:
    """pipeline.yaml's ``name``, else the directory's name."""
    project = model_dir / "pipeline.yaml"
    if project.is_file():
        name = read_yaml_mapping(project).get("name")
        if isinstance(name, str) and name:
            return name
    return model_dir.resolve().name


def _copy_plain(src: Path, dst: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with src.open("rb") as fin, dst.open("wb") as fout:
        while chunk := fin.read(1 << 20):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def seal_model(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    key: str,
    provider: str = "local",
    sign_key: str | os.PathLike[str] | None = None,
    segment_size: int = _streaming.SEGMENT_SIZE_1MB,
    settings: Settings | None = None,
    force: bool = False,
    progress: Callable[[str, int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> SealResult:
    """Seal ``model_dir`` into ``out_dir`` with a fresh data key wrapped by ``key``.

    ``key`` is a key name or key id of ``provider``; ``sign_key`` (a PEM private key)
    signs the sealed directory with model-signing before it is moved into place.
    ``progress(path, nbytes)`` is called as each file is done.
    """
    from pipeline.sealing.keys import get_provider, resolve_key_id

    source = Path(model_dir)
    if not source.is_dir():
        raise InputError(f"{source}: not a model directory")
    if segment_size not in ALLOWED_SEGMENT_SIZES:
        raise InputError(f"segment size must be one of {ALLOWED_SEGMENT_SIZES}")
    target = Path(out_dir)
    if target.resolve() == source.resolve() or source.resolve() in target.resolve().parents:
        raise InputError("the sealed directory must be outside the model directory")
    files = list(project_files(source))
    weights = weight_files(source, files)
    if not weights:
        raise InputError(f"{source}: no weight files found (nothing to seal)")
    for rel in sorted(weights):
        if rel.lower().endswith(".safetensors"):
            # The runtime parses this header after decryption; a file it would refuse is
            # refused now, before anything is encrypted or written.
            check_file(source / rel)

    settings = settings or load_settings()
    key_provider = get_provider(provider, settings)
    key_id = resolve_key_id(key_provider, key)
    data_key = bytearray(secrets.token_bytes(_streaming.KEY_SIZE))
    try:
        with atomic_directory(target, mode=0o755, replace=force, on_exists=_exists) as tmp:
            manifest, manifest_bytes = _seal_into(
                tmp, source, files, weights, data_key, key_provider, key_id, segment_size,
                sign_key, progress, on_bytes,
            )
    finally:
        data_key[:] = bytes(len(data_key))
    return SealResult(
        path=target,
        manifest=manifest,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        signed=sign_key is not None,
    )


def _exists(path: Path) -> InputError:
    return InputError(f"{path} already exists (use --force to replace it)")


def _seal_into(
    tmp: Path,
    source: Path,
    files: list[str],
    weights: set[str],
    data_key: bytearray,
    key_provider: KeyProvider,
    key_id: str,
    segment_size: int,
    sign_key: str | os.PathLike[str] | None,
    progress: Callable[[str, int], None] | None,
    on_bytes: Callable[[int], None] | None,
) -> tuple[SealManifest, bytes]:
    """Encrypt the weights and copy the rest into ``tmp``; write (and sign) seal.json."""
    wrapped = key_provider.wrap(key_id, data_key)
    entries: list[FileEntry] = []
    for rel in files:
        src = source / rel
        if rel in (MANIFEST_NAME, SIGNATURE_NAME):
            raise InputError(f"{src}: '{rel}' is a reserved name in a sealed model")
        if rel in weights:
            sealed_rel = rel + SEALED_SUFFIX
            dst = tmp / sealed_rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            with dst.open("wb") as out:
                result = _streaming.encrypt_file(
                    data_key, src, out, associated_data(rel), segment_size=segment_size,
                    on_bytes=on_bytes,
                )
            entries.append(
                FileEntry(
                    path=rel,
                    size=result.plaintext_size,
                    sha256=result.plaintext_sha256,
                    sealed_path=sealed_rel,
                    sealed_size=result.ciphertext_size,
                    sealed_sha256=result.ciphertext_sha256,
                )
            )
        else:
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            size, digest = _copy_plain(src, dst)
            entries.append(FileEntry(path=rel, size=size, sha256=digest))
        if progress:
            progress(rel, entries[-1].size)
    manifest = SealManifest(
        name=model_name(source),
        segment_size=segment_size,
        key=KeyInfo(
            provider=key_provider.name,
            key_id=key_id,
            wrap_algorithm=key_provider.wrap_algorithm,
            wrapped_key=wrapped,
        ),
        files=tuple(entries),
        signature=SIGNATURE_NAME,
        created_by=f"secure-model-pipeline {__version__}",
    )
    manifest_bytes = manifest.to_bytes()
    (tmp / MANIFEST_NAME).write_bytes(manifest_bytes)
    if sign_key is not None:
        written = {e.stored_path: e.stored_sha256 for e in entries}
        written[MANIFEST_NAME] = hashlib.sha256(manifest_bytes).hexdigest()
        sign_model(tmp, private_key=Path(sign_key), signature_name=SIGNATURE_NAME,
                   known_digests=written)
    return manifest, manifest_bytes
