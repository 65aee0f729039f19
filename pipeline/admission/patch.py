"""JSONPatch (RFC 6902) operations that pin images to the digests the policy verified.

Why ``replace`` with a ``test`` before it: the API server applies the patch to the
object it sent; the ``test`` makes the patch fail (and the request with it) rather than
pin a different image, should the field not hold what we verified.
"""

from __future__ import annotations

from typing import Any


def pinned(image: str, digest: str) -> str:
    """``image`` as written (registry, name, tag) with ``@digest`` appended."""
    return f"{image}@{digest}"


def pin_operations(pointer: str, image: str, digest: str) -> list[dict[str, Any]]:
    """The two operations pinning the image at ``pointer`` to ``digest``."""
    return [
        {"op": "test", "path": pointer, "value": image},
        {"op": "replace", "path": pointer, "value": pinned(image, digest)},
    ]


__all__ = ["pin_operations", "pinned"]
