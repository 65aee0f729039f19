"""Content digests (``algorithm:hex``) as the OCI image spec defines them.

Everything that crosses a trust boundary (a registry answer, a blob on disk) is
addressed by digest and re-hashed on arrival: a digest we did not compute
ourselves is only a claim. Only sha256 and sha512 are accepted; an unknown
algorithm is refused rather than skipped, so verification can never be
silently bypassed by naming an algorithm we cannot check.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, IntegrityError

#: hex length per supported algorithm (OCI image spec, "Registered algorithms").
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_IO_BLOCK = 1 << 20
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")


def file_digest(path: Path, algorithm: str = "sha256") -> tuple[str, int]:
    """``(digest, size)`` of a file, read in 1 MiB blocks (never whole into memory)."""
    hasher, size = hashlib.new(algorithm), 0
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_IO_BLOCK):
            hasher.update(chunk)
            size += len(chunk)
    return f"{algorithm}:{hasher.hexdigest()}", size


def sha256_digest(data: bytes) -> str:
    """The OCI digest string (``sha256:<hex>``) of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_digest(digest: Any) -> tuple[str, str]:
    """Split and validate a digest into ``(algorithm, hex)``; InputError when malformed."""
    if not isinstance(digest, str):
        raise InputError(f"invalid digest {digest!r}: expected a string 'sha256:<hex>'")
    match = _DIGEST_RE.match(digest)
    if not match:
        raise InputError(f"invalid digest {digest!r}: expected 'algorithm:hex'")
    algorithm, encoded = match.groups()
    length = _HEX_LENGTH.get(algorithm)
    if length is None:
        raise InputError(f"invalid digest {digest!r}: unsupported algorithm '{algorithm}'")
    if len(encoded) != length or not re.fullmatch(r"[0-9a-f]+", encoded):
        raise InputError(
            f"invalid digest {digest!r}: {algorithm} needs {length} lowercase hex characters"
        )
    return algorithm, encoded


def is_digest(text: str) -> bool:
    """True when ``text`` is a valid, supported digest."""
    try:
        parse_digest(text)
    except InputError:
        return False
    return True


def hasher_for(digest: str) -> Any:
    """A fresh hashlib object of the digest's algorithm (validated first)."""
    algorithm, _ = parse_digest(digest)
    return hashlib.new(algorithm)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    """The digest of ``data`` with ``algorithm`` (sha256 unless told)."""
    if algorithm not in _HEX_LENGTH:
        raise InputError(f"unsupported digest algorithm '{algorithm}'")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify_digest(data: bytes, expected: str) -> None:
    """Raise IntegrityError unless ``data`` hashes to ``expected``."""
    algorithm, _ = parse_digest(expected)
    actual = digest_of(data, algorithm)
    if actual != expected:
        raise IntegrityError(f"digest mismatch: expected {expected}, got {actual}")


__all__ = ["digest_of", "hasher_for", "is_digest", "parse_digest", "sha256_digest", "verify_digest"]
