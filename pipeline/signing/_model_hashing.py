"""What a model signature covers: one hashing policy, used to sign and to verify.

sha256 per file, symlinks refused (never followed), only the signature file and
``.git`` left out, so manifest digests are plain ``sha256(file)`` and the cheap
verification path can hand them to a loader that hashes while it decrypts.
model-signing does the hashing; this module fixes how it is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import (
    InputError,
    IntegrityError,
    NotFoundError,
    VerificationError,
)

ALWAYS_IGNORED = (".git",)


def check_signature_name(signature_name: str) -> None:
    """The signature lives directly in the model directory: a bare file name only."""
    if (
        not signature_name
        or signature_name in (".", "..")
        or "/" in signature_name
        or "\\" in signature_name
        or "\x00" in signature_name
        or signature_name in ALWAYS_IGNORED
    ):
        raise InputError(f"invalid signature file name: {signature_name!r}")


def check_model_dir(model_dir: Path) -> Path:
    """``model_dir`` must be an existing directory (not a single file, not a symlink)."""
    if model_dir.is_symlink():
        raise InputError(f"model directory is a symlink (refused): {model_dir}")
    if not model_dir.exists():
        raise NotFoundError(f"model directory not found: {model_dir}")
    if not model_dir.is_dir():
        raise InputError(f"not a directory: {model_dir}")
    return model_dir


def hashing_config(signature_name: str) -> Any:
    """The one hashing policy used to sign and to verify (see module docstring)."""
    from model_signing import hashing

    return (
        hashing.Config()
        .use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
        .set_ignored_paths(paths=[signature_name, *ALWAYS_IGNORED], ignore_git_paths=False)
    )


def hashing_config_with_digests(
    signature_name: str, model_dir: Path, known: Mapping[str, str] | None
) -> Any:
    """:func:`hashing_config`, but files whose sha256 the caller already has are not re-read.

    The sealer computes the sha256 of every file it writes while writing it; hashing a
    freshly sealed 1 GiB model again only to sign it would cost as much as the hash
    itself. ``known`` maps relative posix paths to sha256 hex; any other file (and any
    file not in ``known``) is hashed as usual, so the manifest is exactly the one the
    plain configuration produces, and verifies with model-signing unchanged.
    """
    config = hashing_config(signature_name)
    if not known:
        return config
    from model_signing._hashing.hashing import Digest

    serializer = config._serializer  # model-signing 1.1: file.Serializer
    real_factory = serializer._hasher_factory
    root = Path(model_dir)
    digests = {str(root / rel): bytes.fromhex(hex_digest) for rel, hex_digest in known.items()}

    class _Known:
        """A FileHasher whose result is already known (duck-typed: name + compute)."""

        digest_name = "sha256"
        digest_size = 32

        def __init__(self, value: bytes) -> None:
            self._value = value

        def compute(self) -> Any:
            return Digest("sha256", self._value)

    def factory(path: Path) -> Any:
        value = digests.get(str(path))
        return _Known(value) if value is not None else real_factory(path)

    serializer._hasher_factory = factory
    return config


def hash_model(model_dir: Path, signature_name: str, error: type[Exception]) -> dict[str, str]:
    """Hash every file of the model with model-signing: {relative posix path: sha256 hex}."""
    try:
        manifest = hashing_config(signature_name).hash(model_dir)
    except ValueError as exc:  # symlinks, sockets, fifos: refused, never followed
        raise error(f"cannot hash model {model_dir}: {exc}") from None
    except OSError as exc:
        raise InputError(f"cannot read model {model_dir}: {exc.strerror or exc}") from None
    return manifest_digests(manifest)


def manifest_digests(manifest: Any) -> dict[str, str]:
    """A model-signing manifest as {relative posix path: sha256 hex}."""
    result: dict[str, str] = {}
    for descriptor in manifest.resource_descriptors():
        if descriptor.digest.algorithm != "sha256":
            raise VerificationError(
                f"signed manifest uses {descriptor.digest.algorithm!r} digests; sha256 required"
            )
        result[PurePosixPath(descriptor.identifier).as_posix()] = descriptor.digest.digest_hex
    return result


def compare(model_dir: Path, expected: dict[str, str], actual: dict[str, str]) -> None:
    """IntegrityError naming every file that is unsigned, missing or changed."""
    unsigned = sorted(set(actual) - set(expected))
    missing = sorted(set(expected) - set(actual))
    changed = sorted(n for n in set(actual) & set(expected) if actual[n] != expected[n])
    problems: list[str] = []
    problems += [f"{name}: present but not signed" for name in unsigned]
    problems += [f"{name}: signed but missing" for name in missing]
    problems += [f"{name}: content does not match its signature" for name in changed]
    if problems:
        shown = "; ".join(problems[:10])
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise IntegrityError(f"model {model_dir} does not match its signature: {shown}{more}")
