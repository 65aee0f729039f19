"""The layer cache: blobs keyed by a digest of each layer's *inputs*.

Why inputs, not outputs: knowing that a layer is unchanged must not require building it.
The base is keyed by the Debian lock and the assembly format, the deps by the locked
wheel lines and the platform, the app by every path, mode and content. A record also
keeps the layer's (path, kind, mode) index so the lint never re-reads cached blobs. A
cached blob is re-hashed before use and dropped if it does not match its record. How
layers are compressed (:data:`LAYER_FORMAT`) is part of every record's name, so a change
of compression (or of the pinned libzstd) builds the layers again instead of mixing.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline._fileio import install_file, sha256_file, write_atomic
from pipeline.build._tarlayer import LAYER_FORMAT, Entry, LayerBlob, write_layer
from pipeline.oci import media_types as mt
from pipeline.oci.digest import parse_digest

Index = tuple[tuple[str, str, int], ...]


@dataclass(frozen=True)
class CachedLayer:
    """A layer blob in the cache, with what the manifest, config and lint need."""

    blob: Path
    digest: str
    diff_id: str
    size: int
    uncompressed_size: int
    index: Index
    media_type: str = mt.OCI_LAYER_ZSTD


def cache_dir() -> Path:
    """``$PIPELINE_LAYER_CACHE`` or ``~/.cache/secure-model-pipeline/layers``."""
    from pipeline.config import load_settings

    return load_settings().build().layer_cache


def _atomic_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, sort_keys=True))


class LayerCache:
    """``keys/<hex>.json`` records pointing at ``blobs/sha256/<hex>`` layer blobs."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_dir()
        (self.root / "keys").mkdir(parents=True, exist_ok=True)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    def _record(self, key: str) -> Path:
        parse_digest(key)
        name = hashlib.sha256(f"{key}\n{LAYER_FORMAT}".encode()).hexdigest()
        return self.root / "keys" / f"{name}.json"

    def get(self, key: str) -> CachedLayer | None:
        """The layer built from inputs ``key``, if cached and intact."""
        record = self._record(key)
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            blob = self.root / "blobs" / "sha256" / parse_digest(data["digest"])[1]
            layer = CachedLayer(
                blob, data["digest"], data["diff_id"], int(data["size"]),
                int(data["uncompressed_size"]),
                tuple((str(p), str(k), int(m)) for p, k, m in data["index"]),
                str(data["media_type"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not blob.is_file() or "sha256:" + sha256_file(blob) != layer.digest:
            record.unlink(missing_ok=True)
            blob.unlink(missing_ok=True)
            return None
        return layer

    def build(
        self, key: str, entries: list[Entry], progress: Callable[[int], None] | None = None
    ) -> CachedLayer:
        """Write ``entries`` as a layer, store it under ``key`` and return it."""
        # The blob's name is its digest, known only once written: a unique name first.
        staging = self.root / "blobs" / f".layer-{secrets.token_hex(8)}.tar"
        try:
            written: LayerBlob = write_layer(entries, staging, progress)
            blob = self.root / "blobs" / "sha256" / parse_digest(written.digest)[1]
            install_file(written.path, blob)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        layer = CachedLayer(blob, written.digest, written.diff_id, written.size,
                            written.uncompressed_size, written.index, written.media_type)
        _atomic_json(self._record(key), {
            "digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size,
            "uncompressed_size": layer.uncompressed_size,
            "index": [list(item) for item in layer.index],
            "media_type": layer.media_type,
        })
        return layer
