"""Layer blobs as tar streams: gzip, zstd or plain, chosen by media type; others refused.

Why one place: the builder writes zstd layers (they inflate 4-5x faster than gzip, which
is most of a first local start: docs/performance.md), while images from elsewhere carry
gzip or plain tar. Every reader of layers (the local unpacker, step images, the scan, the
provenance) must accept the same three and refuse anything else with a clear error
instead of feeding a foreign encoding to ``tarfile``. Blobs whose media type is not at
hand (a cached layer, a layout on disk) are recognised by their magic bytes instead.
"""

from __future__ import annotations

import contextlib
import gzip
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from pipeline.errors import InputError
from pipeline.oci import media_types as mt

GZIP = "gzip"
ZSTD = "zstd"
PLAIN = ""
#: Layer media types the readers accept, and how each is compressed.
LAYER_COMPRESSION: dict[str, str] = {
    mt.OCI_LAYER: PLAIN,
    mt.OCI_LAYER_GZIP: GZIP,
    mt.OCI_LAYER_ZSTD: ZSTD,
    mt.DOCKER_LAYER_GZIP: GZIP,
}
MEDIA_TYPE = {PLAIN: mt.OCI_LAYER, GZIP: mt.OCI_LAYER_GZIP, ZSTD: mt.OCI_LAYER_ZSTD}


class LayerDecodeError(ValueError):
    """A zstd blob that does not decode (gzip raises ``zlib.error``, ``EOFError``)."""


#: What a corrupt or truncated blob raises while it is read (besides ``tarfile.TarError``).
DECODE_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, zlib.error, LayerDecodeError)
#: The same, and what ``tarfile`` raises for a stream that is not a tar archive.
READ_ERRORS: tuple[type[Exception], ...] = (tarfile.TarError, *DECODE_ERRORS)
_MAGIC = ((b"\x1f\x8b", GZIP), (b"\x28\xb5\x2f\xfd", ZSTD))
_READ = 1 << 20


def compression_of(media_type: str, where: str) -> str:
    """The compression of a layer of ``media_type``; InputError for any other type."""
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise InputError(
            f"{where}: unsupported layer media type {media_type!r} (supported: "
            f"{', '.join(sorted(LAYER_COMPRESSION))})") from None


def sniff(path: Path) -> str:
    """The compression of the blob at ``path`` from its first bytes (plain tar otherwise)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), PLAIN)


@contextlib.contextmanager
def open_layer(path: Path, compression: str | None = None) -> Iterator[IO[bytes]]:
    """The uncompressed tar stream of the blob at ``path`` (``compression`` None: sniffed).

    A stream, not a seekable file: read it with ``tarfile.open(fileobj=..., mode="r|")``.
    Trailing frames of a multi-frame zstd blob are read too (zstd:chunked writes several).
    """
    kind = sniff(path) if compression is None else compression
    raw = open(path, "rb")  # noqa: SIM115 - closed below, after the decoder
    try:
        if kind == GZIP:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield cast(IO[bytes], stream)
        elif kind == ZSTD:
            # Imported here: the runtime image carries this module (pipeline.oci) but never
            # reads image layers, so it need not carry zstandard.
            import zstandard

            try:
                with zstandard.ZstdDecompressor().stream_reader(
                        raw, read_size=_READ, read_across_frames=True, closefd=False) as stream:
                    yield stream
            except zstandard.ZstdError as exc:
                raise LayerDecodeError(f"{path.name}: not a zstd stream: {exc}") from None
        elif kind == PLAIN:
            yield raw
        else:
            raise InputError(f"{path.name}: unknown layer compression {kind!r}")
    finally:
        raw.close()


__all__ = ["DECODE_ERRORS", "GZIP", "LAYER_COMPRESSION", "MEDIA_TYPE", "PLAIN", "READ_ERRORS",
           "ZSTD",            "LayerDecodeError", "compression_of", "open_layer", "sniff"]
