"""The OCI image layout on disk: ``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``.

A layout is the registry of the local path (and what skopeo/umoci read as
``oci:DIR``). Rules kept here:

* blobs are content-addressed and written to a temporary name, hashed while
  written, and renamed into place only when the digest matches, so a crash or
  a tampered download never leaves a blob whose name lies about its content;
* ``index.json`` is rewritten atomically (temp + rename) with sorted keys, so
  the same operations give the same bytes, and under an exclusive lock so two
  writers do not lose each other's entries;
* blobs read back are re-hashed (IntegrityError when they do not match).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pipeline._fileio import AtomicFile, write_atomic
from pipeline.errors import InputError, IntegrityError, NotFoundError
from pipeline.oci import media_types as mt
from pipeline.oci.digest import is_digest, parse_digest

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
_CHUNK = 1 << 20


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class BlobWriter:
    """A file-like sink for one blob: hashes as it goes, commits only a verified blob."""

    def __init__(self, layout: OCILayout, expected: str | None, algorithm: str = "sha256"):
        self._layout = layout
        self._expected = expected
        self._algorithm = parse_digest(expected)[0] if expected else algorithm
        self._hash = hashlib.new(self._algorithm)
        self.size = 0
        directory = layout.path / "blobs" / self._algorithm
        directory.mkdir(parents=True, exist_ok=True)
        self._pending = AtomicFile(directory, ".upload-")
        self.digest: str | None = None

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._pending.file.write(data)

    def commit(self) -> str:
        """Verify and rename into place; returns the digest."""
        digest = f"{self._algorithm}:{self._hash.hexdigest()}"
        if self._expected and digest != self._expected:
            self.abort()
            raise IntegrityError(f"blob digest mismatch: expected {self._expected}, got {digest}")
        self._pending.commit(self._layout.blob_path(digest))
        self.digest = digest
        return digest

    def abort(self) -> None:
        """Drop the temporary file (nothing reaches ``blobs/``)."""
        self._pending.abort()


class OCILayout:
    """An OCI image layout directory (image-spec ``image-layout.md``)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # -- creation ------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> OCILayout:
        """Create a layout at ``path`` (or open it when it already is one)."""
        root = Path(path)
        if (root / LAYOUT_FILE).is_file():
            return cls.open(root)
        if root.exists() and not root.is_dir():
            raise InputError(f"{root}: exists and is not a directory")
        if root.is_dir() and any(root.iterdir()):
            raise InputError(f"{root}: directory is not empty and not an OCI layout")
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        write_atomic(root / LAYOUT_FILE, _dumps({"imageLayoutVersion": LAYOUT_VERSION}))
        write_atomic(
            root / INDEX_FILE,
            _dumps({"manifests": [], "mediaType": mt.OCI_INDEX, "schemaVersion": 2}),
        )
        return cls(root)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> OCILayout:
        """Open an existing layout; InputError when ``path`` is not one."""
        root = Path(path)
        marker = root / LAYOUT_FILE
        if not marker.is_file() or not (root / INDEX_FILE).is_file():
            raise InputError(f"{root}: not an OCI image layout (no {LAYOUT_FILE}/{INDEX_FILE})")
        try:
            version = json.loads(marker.read_bytes()).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            raise InputError(f"{marker}: not valid JSON") from None
        if version != LAYOUT_VERSION:
            raise InputError(f"{marker}: unsupported imageLayoutVersion {version!r}")
        layout = cls(root)
        layout._read_index()
        return layout

    # -- blobs ---------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Where the blob named ``digest`` lives (validated: no path tricks via the name)."""
        algorithm, encoded = parse_digest(digest)
        return self.path / "blobs" / algorithm / encoded

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        """The blob's bytes, re-hashed; IntegrityError when the file was altered."""
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{self.path}: blob {digest} not in layout") from None
        algorithm, encoded = parse_digest(digest)
        if hashlib.new(algorithm, data).hexdigest() != encoded:
            raise IntegrityError(f"{path}: content does not match its digest {digest}")
        return data

    def verify_blob(self, digest: str) -> int:
        """Re-hash a blob on disk without loading it whole; returns its size."""
        path = self.blob_path(digest)
        algorithm, encoded = parse_digest(digest)
        hasher, size = hashlib.new(algorithm), 0
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    hasher.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise NotFoundError(f"{self.path}: blob {digest} not in layout") from None
        if hasher.hexdigest() != encoded:
            raise IntegrityError(f"{path}: content does not match its digest {digest}")
        return size

    def write_blob(self, data: bytes, media_type: str | None = None) -> dict[str, Any]:
        """Store ``data``; returns its descriptor (``mediaType`` when given, digest, size)."""
        writer = BlobWriter(self, None)
        try:
            writer.write(data)
            digest = writer.commit()
        except BaseException:
            writer.abort()
            raise
        descriptor: dict[str, Any] = {"digest": digest, "size": len(data)}
        if media_type:
            descriptor["mediaType"] = media_type
        return descriptor

    def write_blob_file(
        self, source: str | os.PathLike[str] | BinaryIO, expected: str | None = None
    ) -> tuple[str, int]:
        """Stream a file (path or binary stream) into the layout; returns ``(digest, size)``."""
        with self.blob_writer(expected) as writer:
            if isinstance(source, (str, os.PathLike)):
                with open(source, "rb") as handle:
                    _copy(handle, writer)
            else:
                _copy(source, writer)
        assert writer.digest is not None
        return writer.digest, writer.size

    @contextlib.contextmanager
    def blob_writer(self, expected: str | None = None) -> Iterator[BlobWriter]:
        """Context manager: write a blob in pieces; committed (and verified) on clean exit."""
        writer = BlobWriter(self, expected)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    # -- index ---------------------------------------------------------------------------
    def _read_index(self) -> dict[str, Any]:
        path = self.path / INDEX_FILE
        try:
            index = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise InputError(f"{self.path}: not an OCI image layout (no {INDEX_FILE})") from None
        except ValueError as exc:
            raise InputError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
            raise InputError(f"{path}: not an OCI image index")
        for entry in index.get("manifests", []):
            if not isinstance(entry, dict) or not is_digest(entry.get("digest", "")):
                raise InputError(f"{path}: manifest entry without a valid digest: {entry!r}")
        return index

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path / ".index.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def manifests(self) -> list[dict[str, Any]]:
        """The descriptors listed in ``index.json`` (copies)."""
        return [dict(entry) for entry in self._read_index().get("manifests", [])]

    def add_manifest(
        self,
        manifest: bytes,
        media_type: str,
        *,
        tag: str | None = None,
        annotations: dict[str, str] | None = None,
        platform: dict[str, Any] | None = None,
        artifact_type: str | None = None,
    ) -> str:
        """Store a manifest blob and list it in ``index.json``; returns its digest.

        A tag moves: an older entry with the same ``org.opencontainers.image.ref.name``
        loses the name. An untagged manifest already listed is not listed twice.
        """
        try:
            json.loads(manifest)
        except ValueError as exc:
            raise InputError(f"manifest is not valid JSON: {exc}") from None
        descriptor = self.write_blob(manifest, media_type)
        if artifact_type:
            descriptor["artifactType"] = artifact_type
        entry_annotations = dict(annotations or {})
        if tag is not None:
            entry_annotations[mt.ANNOTATION_REF_NAME] = tag
        if entry_annotations:
            descriptor["annotations"] = entry_annotations
        if platform:
            descriptor["platform"] = dict(platform)
        with self._locked():
            index = self._read_index()
            entries: list[dict[str, Any]] = []
            for entry in index.get("manifests", []):
                name = (entry.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME)
                if tag is not None and name == tag:
                    continue  # the tag moves to the new manifest
                if entry == descriptor:
                    continue  # re-adding the same entry is a no-op
                entries.append(entry)
            entries.append(descriptor)
            index["manifests"] = entries
            index.setdefault("schemaVersion", 2)
            index.setdefault("mediaType", mt.OCI_INDEX)
            write_atomic(self.path / INDEX_FILE, _dumps(index))
        return str(descriptor["digest"])

    def resolve(self, tag_or_digest: str | None = None) -> dict[str, Any]:
        """The descriptor for a tag or digest; with none, the layout's only manifest."""
        entries = self.manifests()
        if tag_or_digest is None:
            if len(entries) != 1:
                names = sorted(
                    (e.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME, e["digest"])
                    for e in entries
                )
                raise InputError(
                    f"{self.path}: holds {len(entries)} manifests, name one with a tag: {names}"
                )
            return entries[0]
        if is_digest(tag_or_digest):
            for entry in entries:
                if entry["digest"] == tag_or_digest:
                    return entry
            if self.has_blob(tag_or_digest):
                return self._descriptor_from_blob(tag_or_digest)
        else:
            matches = [
                e
                for e in entries
                if (e.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME) == tag_or_digest
            ]
            if matches:
                return matches[-1]
        raise NotFoundError(f"{self.path}: no manifest named {tag_or_digest!r}")

    def _descriptor_from_blob(self, digest: str) -> dict[str, Any]:
        data = self.read_blob(digest)
        try:
            media_type = json.loads(data).get("mediaType")
        except (ValueError, AttributeError):
            media_type = None
        if not media_type:
            raise InputError(f"{self.path}: blob {digest} is not a manifest with a mediaType")
        return {"digest": digest, "mediaType": media_type, "size": len(data)}


def _copy(source: BinaryIO, writer: BlobWriter) -> None:
    while chunk := source.read(_CHUNK):
        writer.write(chunk)


__all__ = ["BlobWriter", "OCILayout"]
